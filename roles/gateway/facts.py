"""What the gateway host says about its edge."""

from pyinfra.api import FactBase

from r1deploy.serving.edge import LOADED_MARK, edge_digests_sh


class EdgeLoaded(FactBase):
    """Whether nginx runs the edge files on disk: "loaded" (their digests equal those recorded
    after the last successful reload), "stale" (they changed since: a reload failed or never ran)
    or "unknown" (no reload was ever recorded)."""

    def command(self):
        return (f"if [ ! -e {LOADED_MARK} ]; then echo unknown; "
                f"elif {{ {edge_digests_sh()}; }} | cmp -s - {LOADED_MARK}; then echo loaded; else echo stale; fi")

    def process(self, output):
        said = "\n".join(output).strip()
        return said if said in ("loaded", "stale", "unknown") else "unknown"


class RouterColours(FactBase):
    """Blue/green as the host has it: nginx's upstream include (None: absent) and, per colour's
    unit, the sha256 of its unit file (None: absent) and whether it is active."""

    def command(self, upstream: str, units: list[str]):
        parts = [f"echo '@@upstream'; cat {upstream} 2>/dev/null || echo '@@absent'"]
        parts += [f"echo '@@unit {u}'; sha256sum 2>/dev/null < /etc/systemd/system/{u} | cut -d' ' -f1; "
                  f"echo \"@@active $(systemctl is-active {u} 2>/dev/null)\"" for u in units]
        return "; ".join(parts)

    def process(self, output):
        out: dict = {"upstream": None, "units": {}, "active": {}}
        section, upstream = None, []
        for line in output:
            if line == "@@upstream" or line.startswith("@@unit "):
                section = line.removeprefix("@@unit ")
            elif line.startswith("@@active "):
                out["active"][section] = line.removeprefix("@@active ").strip() == "active"
            elif section == "@@upstream":
                upstream.append(line)
            elif section:
                out["units"][section] = line.strip() or None
        out["upstream"] = None if upstream in ([], ["@@absent"]) else "\n".join(upstream)
        return out


class RouterArgv(FactBase):
    """What a unit's running process is (from /proc and systemd): {} when it runs none. vllm-router
    renames its process ("vllm::router": its argv is gone from /proc), so beside the argv come the
    router venv its process mapped (the version it runs), whether it started after its unit file was
    last written (then it runs that file's flags) and whether systemd still has to reload the file."""

    def command(self, service: str):
        unit = f"/etc/systemd/system/{service}"
        return (f"p=$(systemctl show -p MainPID --value {service} 2>/dev/null); "
                f"if [ \"${{p:-0}}\" -gt 0 ] 2>/dev/null; then echo @@argv; tr '\\0' '\\n' < /proc/$p/cmdline; echo; "
                f"echo @@venv; grep -o '/[^ ]*/router-[^/ ]*/' /proc/$p/maps | sort -u; "
                f"echo @@started; stat -c %Y /proc/$p; echo @@unit; stat -c %Y {unit} 2>/dev/null; "
                f"echo @@reload; systemctl show -p NeedDaemonReload --value {service}; fi; true")

    def process(self, output):
        seen: dict = {}
        key = None
        for line in output:
            if line.startswith("@@"):
                key = line[2:]
                seen[key] = []
            elif key and line:
                seen[key].append(line)
        if not seen:
            return {}
        one = lambda k: (seen.get(k) or [""])[0]  # noqa: E731
        return {"argv": seen.get("argv", []), "venvs": seen.get("venv", []),
                "started": int(one("started") or 0), "unit_mtime": int(one("unit") or 0),
                "need_reload": one("reload") == "yes"}

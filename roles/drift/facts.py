"""Read-only facts for the drift check. Every command exits 0 and says what it could not read,
so a missing file or a stopped service is a value, not a failed host."""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase

from r1deploy.drift.checks import parse_metadata
from r1deploy.serving.edge import curl_auth


class FileDigests(FactBase):
    """{path: sha256, or None when missing/unreadable}."""

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return f"for f in {quoted}; do sha256sum -- \"$f\" 2>/dev/null || printf 'MISSING  %s\\n' \"$f\"; done"

    @staticmethod
    def default():
        return {}

    def process(self, output):
        found = {}
        for line in output:
            digest, _, path = line.partition("  ")
            found[path] = None if digest == "MISSING" else digest
        return found


class DistVersions(FactBase):
    """{canonical name: version} from a venv's dist-info METADATA headers (what pip reads; no pip
    call). None when the venv has no site-packages."""

    def command(self, venv):
        site = f"{shlex.quote(venv)}/lib/python3*/site-packages"
        return (f"for d in {site}; do [ -d \"$d\" ] || continue; echo R1DEPLOY_SITE; "
                "for m in \"$d\"/*.dist-info/METADATA; do [ -f \"$m\" ] && grep -m2 -E '^(Name|Version):' \"$m\"; "
                "done; break; done; true")

    def process(self, output):
        if not output or output[0] != "R1DEPLOY_SITE":
            return None
        return parse_metadata(output[1:])


class UnitStates(FactBase):
    """{unit: (is-enabled, is-active)}; empty strings where systemd does not know the unit."""

    def command(self, units):
        quoted = " ".join(shlex.quote(u) for u in units)
        return (f"for u in {quoted}; do printf '%s|%s|%s\\n' \"$u\" \"$(systemctl is-enabled \"$u\" 2>/dev/null)\" "
                "\"$(systemctl is-active \"$u\" 2>/dev/null)\"; done")

    @staticmethod
    def default():
        return {}

    def process(self, output):
        states = {}
        for line in output:
            unit, _, rest = line.partition("|")
            enabled, _, active = rest.partition("|")
            states[unit] = (enabled or None, active or None)
        return states


class LocalJson(FactBase):
    """GET a URL on the host itself (loopback or its fleet address): {"ok": bool, "body": JSON or
    text}. auth: send the nodes' vLLM key from the host's root-only header file (r1deploy.serving.edge)."""

    def command(self, url, auth=False):
        key = f"{curl_auth()} " if auth else ""
        return (f"if out=$(curl -fsS -m 5 {key}{shlex.quote(url)} 2>&1); then echo R1DEPLOY_OK; "
                "else echo R1DEPLOY_FAILED; fi; printf '%s\\n' \"$out\"")

    def process(self, output):
        text = "\n".join(output[1:])
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return {"ok": output[0] == "R1DEPLOY_OK", "body": body}


class AptPins(FactBase):
    """{path: text} of r1deploy's apt preferences files (the GPU role's exact-version pins)."""

    def command(self, directory="/etc/apt/preferences.d"):
        return (f"for f in {shlex.quote(directory)}/r1deploy-*; do [ -f \"$f\" ] || continue; "
                "echo \"R1DEPLOY_FILE $f\"; cat \"$f\"; done; true")

    @staticmethod
    def default():
        return {}

    def process(self, output):
        pins, path = {}, None
        for line in output:
            if line.startswith("R1DEPLOY_FILE "):
                path = line.split(" ", 1)[1]
                pins[path] = ""
            elif path:
                pins[path] += line + "\n"
        return pins


class AgentWeights(FactBase):
    """The host agent's weights JSON: `status` (size + mtime) or `verify --full` (sha256 of every
    file; it drops a corrupt file's manifest entry, so the next converge re-fetches it). {} before
    the agent exists. An agent that fails raises here: the weights check says "could not check"
    with the agent's own last line, not "not installed"."""

    def command(self, agent_python, agent_src, args):
        run = f"PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={agent_src} {agent_python} -m r1deploy.weights {args}"
        return (f"if [ -f {agent_src}/r1deploy/weights/__main__.py ]; then out=$({run} 2>&1); "
                "echo \"R1DEPLOY_RC $?\"; printf '%s\\n' \"$out\"; else echo 'R1DEPLOY_RC 0'; echo '{}'; fi")

    def process(self, output):
        rc = int(output[0].split()[1])
        body = next((line for line in reversed(output[1:]) if line.startswith("{")), None)
        if body is None:
            raise ValueError(f"agent exited {rc}: {(output[1:] or ['no output'])[-1][:300]}")
        return json.loads(body)


class AgentVersion(FactBase):
    """The host agent's r1deploy __version__ (src: the agent venv's src/), None when there is none."""

    def command(self, src):
        return f"sed -n 's/^__version__ = \"\\(.*\\)\"$/\\1/p' {shlex.quote(src)}/r1deploy/__init__.py 2>/dev/null; true"

    @staticmethod
    def default():
        return None

    def process(self, output):
        return output[0].strip() if output and output[0].strip() else None


class FileModes(FactBase):
    """{path: (owner, group, mode), or None when missing} (`stat`, no content read)."""

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return f"for f in {quoted}; do stat -c '%U %G %a %n' -- \"$f\" 2>/dev/null || printf 'MISSING %s\\n' \"$f\"; done"

    @staticmethod
    def default():
        return {}

    def process(self, output):
        from r1deploy.drift.intruder import parse_stat

        return parse_stat(list(output))


class NginxDigests(FactBase):
    """`nginx -T` digested on the host (r1deploy.drift.intruder.dump_digests, sent as its source):
    {"ok": nginx -T exited 0, "digests": {path: sha256}, "error": its last line when it failed}.
    The dump itself (keys.conf holds keys) never leaves the host."""

    def command(self):
        import inspect

        from r1deploy.drift.intruder import dump_digests

        script = inspect.getsource(dump_digests) + "\nimport json, sys\nprint(json.dumps(dump_digests(sys.stdin.read())))\n"
        return ("out=$(nginx -T 2>&1); rc=$?; echo \"R1DEPLOY_RC $rc\"; "
                f"printf '%s\\n' \"$out\" | python3 -c {shlex.quote(script)}; "
                "[ $rc = 0 ] || printf '%s\\n' \"$out\" | tail -n 1")

    def process(self, output):
        rc = output[0].split()[1] if output and output[0].startswith("R1DEPLOY_RC ") else "?"
        digests = json.loads(output[1]) if len(output) > 1 and output[1].startswith("{") else None
        return {"ok": rc == "0", "digests": digests if rc == "0" else None, "error": output[-1] if output else ""}

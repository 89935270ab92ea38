"""Drift an intruder (or a tired colleague) would leave (issue 23 item 4): owner, group and mode of
what r1deploy installs, the monitor stack, nginx's effective config (`nginx -T`) and the live
firewall (`nft list ruleset`). Pure: facts come in as text, Findings go out; `ok=None` is "could
not check" (the fact was not readable), never a pass.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping

from r1deploy.drift.runs import Finding

Mode = tuple[str, str, str]  # (owner, group, octal mode as `stat -c %a` prints it)


def _octal(mode: str) -> str:
    return mode.lstrip("0") or "0"


def parse_stat(lines: list[str]) -> dict[str, Mode | None]:
    """`stat -c '%U %G %a %n'` lines (or 'MISSING <path>') -> {path: (owner, group, mode) or None}."""
    found: dict[str, Mode | None] = {}
    for line in lines:
        if line.startswith("MISSING "):
            found[line[8:]] = None
            continue
        parts = line.split(" ", 3)
        if len(parts) == 4:
            found[parts[3]] = (parts[0], parts[1], parts[2])
    return found


def file_modes(host: str, want: Mapping[str, Mode], live: Mapping[str, Mode | None] | None) -> list[Finding]:
    """Every installed secret and rendered file with the owner, group and mode r1deploy gives it."""
    if live is None:
        return [Finding(host, "file-modes", None, "stat of the installed files failed")]
    bad = []
    for path in sorted(want):
        owner, group, mode = want[path]
        got = live.get(path)
        if got is None:
            bad.append(f"{path} missing")
        elif (got[0], got[1], _octal(got[2])) != (owner, group, _octal(mode)):
            bad.append(f"{path} {got[0]}:{got[1]} 0{_octal(got[2])} (want {owner}:{group} 0{_octal(mode)})")
    if bad:
        return [Finding(host, "file-modes", False, "; ".join(bad))]
    return [Finding(host, "file-modes", True, f"{len(want)} file(s) with their owner, group and mode")]


def units_running(host: str, check: str, states: Mapping[str, tuple[str | None, str | None]]) -> list[Finding]:
    """Each unit enabled and active (the monitor stack: Prometheus, the node exporter)."""
    if not states:
        return [Finding(host, check, None, "systemctl answered nothing")]
    return [Finding(host, check, enabled == "enabled" and active == "active",
                    f"{unit} {enabled or 'unknown'}, {active or 'unknown'}")
            for unit, (enabled, active) in sorted(states.items())]


def dump_digests(text: str) -> dict[str, str]:
    """`nginx -T` -> {path: sha256 of that file's lines}: nginx prints each file it parsed after a
    '# configuration file PATH:' line (and a newline of its own after it). Trailing blanks and
    blank end lines do not count. Self-contained on purpose: the drift fact runs this very function
    on the gateway, so keys.conf's keys never leave it (roles/drift/facts.NginxDigests)."""
    import hashlib
    import re

    files: dict[str, list[str]] = {}
    current = None
    for line in text.split("\n"):
        header = re.match(r"^# configuration file (.+):$", line)
        if header:
            current = header.group(1)
            files[current] = []
        elif current is not None:
            files[current].append(line.rstrip())
    digests = {}
    for path, lines in files.items():
        while lines and not lines[-1]:
            lines.pop()
        digests[path] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return digests


def text_digest(content: str) -> str:
    """A rendered file's digest as dump_digests computes it for the file nginx parsed."""
    return dump_digests(f"# configuration file -:\n{content}")["-"]


# Files of Debian's nginx package that nginx.conf includes: not r1deploy's, not an intruder's.
DISTRIBUTION = ("/etc/nginx/nginx.conf", "/etc/nginx/mime.types", "/etc/nginx/modules-enabled/*.conf",
                "/usr/share/nginx/modules-available/*.conf")


def nginx_live(host: str, want: Mapping[str, str], live: Mapping[str, str] | None, error: str = "") -> list[Finding]:
    """nginx's effective config (`nginx -T`): every rendered file parsed as rendered (want: path ->
    rendered text; live: path -> digest, None when nginx -T failed), and no file besides Debian's own
    (a server block dropped into conf.d or sites-enabled is named)."""
    if live is None:
        return [Finding(host, "nginx-live", None, f"nginx -T failed: {error[-300:]!r}")]
    bad = [f"{p} not in nginx's config" if p not in live else f"{p} differs from the render"
           for p in sorted(want) if live.get(p) != text_digest(want[p])]
    extra = sorted(p for p in live if p not in want and not any(fnmatch.fnmatch(p, g) for g in DISTRIBUTION))
    bad += [f"{p} loaded, neither r1deploy's nor Debian's" for p in extra]
    if bad:
        return [Finding(host, "nginx-live", False, "; ".join(bad))]
    return [Finding(host, "nginx-live", True, f"nginx -T: {len(want)} rendered file(s) as rendered, nothing else")]


def table_block(ruleset: str, family: str, table: str) -> str | None:
    """One table's text out of `nft list ruleset` (None: not loaded)."""
    lines = ruleset.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"table {family} {table} {{"), None)
    if start is None:
        return None
    depth = 0
    for i in range(start, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        if depth == 0:
            return "\n".join(lines[start:i + 1]) + "\n"
    return None


def _norm(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def firewall_live(host: str, ruleset: str | None, loaded: str | None, loaded_sha: str | None, want_sha: str,
                  family: str = "inet", table: str = "r1deploy") -> list[Finding]:
    """The live table against the last confirmed load, and that load against today's render."""
    if ruleset is None:
        return [Finding(host, "firewall", None, "nft list ruleset failed (nft missing?)")]
    live = table_block(ruleset, family, table)
    if live is None:
        return [Finding(host, "firewall", False, f"table {family} {table} is not loaded (flushed or deleted): "
                        "nothing of r1deploy's is filtered")]
    if loaded is None or loaded_sha != want_sha:
        return [Finding(host, "firewall", False, "the last confirmed load is not today's render (converge)")]
    if _norm(live) != _norm(loaded):
        diff = [d for d in difflib.unified_diff(_norm(loaded), _norm(live), lineterm="", n=0)
                if d[:1] in "+-" and d[:3] not in ("+++", "---")]
        return [Finding(host, "firewall", False, "live table differs from the load: " + "; ".join(diff[:6]))]
    return [Finding(host, "firewall", True, f"table {family} {table} live as rendered ({len(_norm(live))} lines)")]

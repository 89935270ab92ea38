"""Drift comparisons: what the spec renders today against what a host reports. Pure: the facts
come in as plain values (roles/drift/facts.py reads them), findings go out.

Every function returns a list of Findings for one check name; `ok=None` is "could not check"
(the fact was not readable), never a pass.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from r1deploy.drift.runs import Finding


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503, as pip compares names


def files_match(host: str, check: str, want: Mapping[str, str], live: Mapping[str, str | None],
                where: str) -> list[Finding]:
    """want: name -> rendered content; live: name -> sha256 on the host (None: missing)."""
    bad = []
    for name in sorted(want):
        got = live.get(name)
        if got is None:
            bad.append(f"{name} missing")
        elif got != sha256(want[name]):
            bad.append(f"{name} differs from the spec's render (sha256 {got[:12]} != {sha256(want[name])[:12]})")
    if bad:
        return [Finding(host, check, False, f"{where}: " + "; ".join(bad))]
    return [Finding(host, check, True, f"{where}: {len(want)} file(s) as rendered")]


def edge_loaded(host: str, state: str) -> list[Finding]:
    """nginx runs the edge files on disk ("loaded"), or not since they changed ("stale": a failed
    `nginx -t` or a converge that died before the reload; a revoked key may still work)."""
    if state == "loaded":
        return [Finding(host, "edge-loaded", True, "nginx runs the edge files on disk")]
    if state == "stale":
        return [Finding(host, "edge-loaded", False, "the edge files on disk changed since nginx last loaded them "
                        "(nginx -t failed or the converge stopped before the reload): converge to reload")]
    return [Finding(host, "edge-loaded", None, "no reload recorded yet (a converge records one)")]


def release_link(host: str, live_target: str | None, want_release: str) -> list[Finding]:
    live = (live_target or "").rstrip("/").rsplit("/", 1)[-1]
    return [Finding(host, "release", live == want_release, f"live={live or 'none'} spec={want_release}")]


def parse_metadata(lines: Iterable[str]) -> dict[str, str]:
    """`Name:`/`Version:` header pairs of dist-info METADATA files -> {canonical name: version}."""
    found: dict[str, str] = {}
    name = None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "Name":
            name = _canonical(value.strip())
        elif key == "Version" and name:
            found[name] = value.strip()
            name = None
    return found


def packages_match(host: str, check: str, venv: str, pins: Iterable[str],
                   installed: Mapping[str, str] | None) -> list[Finding]:
    """pins: "name==version" as the roles install them; installed: dist-info versions."""
    if installed is None:
        return [Finding(host, check, None, f"{venv}: no site-packages to read")]
    if not installed:
        return [Finding(host, check, False, f"{venv}: virtualenv missing or empty")]
    bad, good = [], []
    for pin in pins:
        name, _, version = pin.partition("==")
        got = installed.get(_canonical(name.strip()))
        (good if got == version.strip() else bad).append(f"{name.strip()} {got or 'missing'}"
                                                         + ("" if got == version.strip() else f" (want {version.strip()})"))
    if bad:
        return [Finding(host, check, False, f"{venv}: " + ", ".join(bad))]
    return [Finding(host, check, True, f"{venv}: " + ", ".join(good))]


def parse_pin_file(text: str) -> tuple[list[str], str | None]:
    """An apt preferences stanza the GPU role wrote -> (packages, pinned version)."""
    packages, version = [], None
    for line in text.splitlines():
        if line.startswith("Package:"):
            packages = line.split(":", 1)[1].split()
        elif line.startswith("Pin: version "):
            version = line.removeprefix("Pin: version ").strip()
    return packages, version


def held_packages(host: str, pins: Mapping[str, str], installed: Mapping[str, tuple[str, bool]],
                  driver_branch: str, driver_version: str | None) -> list[Finding]:
    """pins: pin file -> its text; installed: package -> (version, held). Every pinned package
    must be installed at its pinned version and held; the driver pin must still be the spec's."""
    if not pins:
        return [Finding(host, "nvidia-packages", False, "no r1deploy apt pins on this GPU host")]
    bad, seen = [], 0
    for path, text in sorted(pins.items()):
        packages, version = parse_pin_file(text)
        if not packages or not version:
            bad.append(f"{path}: not a pin stanza")
            continue
        if path.endswith("nvidia-driver"):
            upstream = version.split(":")[-1].split("-")[0]
            if not upstream.startswith(f"{driver_branch}.") or (driver_version and upstream != driver_version):
                bad.append(f"driver pinned at {version}, spec wants {driver_version or driver_branch + '.*'}")
        for name in packages:
            seen += 1
            got, held = installed.get(name, (None, False))
            if got != version:
                bad.append(f"{name} {got or 'not installed'} (pinned {version})")
            elif not held:
                bad.append(f"{name} {got} not held")
    if bad:
        return [Finding(host, "nvidia-packages", False, "; ".join(bad))]
    return [Finding(host, "nvidia-packages", True, f"{seen} package(s) at their pinned versions, held")]


def unit_state(host: str, unit: str, enabled: str | None, active: str | None) -> list[Finding]:
    ok = enabled == "enabled" and active == "active"
    return [Finding(host, "service", ok, f"{unit} {enabled or 'unknown'}, {active or 'unknown'}")]


def answers(host: str, health: Mapping[str, Any], served_name: str) -> list[Finding]:
    served = served_name in health.get("models", [])
    return [Finding(host, "answers", bool(health.get("healthy")) and served,
                    f"/health {'ok' if health.get('healthy') else 'down'}; /v1/models {health.get('models', [])}")]


def served_revision(host: str, body: Any, model_dir: str) -> list[Finding]:
    """`/v1/models` names the directory it loaded (`root`): the pinned commit's, or drift."""
    try:
        roots = sorted({m["root"] for m in body["data"]})
    except (TypeError, KeyError):
        return [Finding(host, "revision", None, f"/v1/models answered {str(body)[:200]!r}")]
    return [Finding(host, "revision", roots == [model_dir], f"serving {', '.join(roots) or 'nothing'}"
                    + ("" if roots == [model_dir] else f", want {model_dir}"))]


def router_workers(body: Any) -> list[str] | None:
    """vllm-router's `GET /list_workers` -> worker URLs (None: not a reply we understand)."""
    if isinstance(body, dict):
        body = next((body[k] for k in ("urls", "workers", "worker_urls") if k in body), None)
    if not isinstance(body, list):
        return None
    urls = [w if isinstance(w, str) else (w.get("url") if isinstance(w, dict) else None) for w in body]
    return None if any(u is None for u in urls) else [u.rstrip("/") for u in urls]


def backends_match(host: str, want: Iterable[str], body: Any) -> list[Finding]:
    got = router_workers(body)
    if got is None:
        return [Finding(host, "backends", None, f"/list_workers answered {str(body)[:200]!r}")]
    want_set, got_set = {u.rstrip("/") for u in want}, set(got)
    if want_set == got_set:
        return [Finding(host, "backends", True, f"{len(got_set)} worker(s) in rotation, as the inventory says")]
    parts = []
    if want_set - got_set:
        parts.append("missing " + ", ".join(sorted(want_set - got_set)))
    if got_set - want_set:
        parts.append("unexpected " + ", ".join(sorted(got_set - want_set)))
    return [Finding(host, "backends", False, "; ".join(parts))]


def weights(host: str, status: Mapping[str, Any], revision: str, full: bool) -> list[Finding]:
    """The agent's `status` / `verify --full` JSON against the pinned revision."""
    if not status:
        return [Finding(host, "weights", None, "host agent not installed")]
    if status.get("error"):
        return [Finding(host, "weights", None, f"agent: {status['error']}")]
    commit = status.get("commit")
    problems = [f"{p.get('path')}: {p.get('problem')}" if isinstance(p, dict) else str(p)
                for p in status.get("problems") or []]
    ok = commit == revision and bool(status.get("ok", status.get("verified")))
    how = "sha256 rehash" if full else "size+mtime"
    detail = f"current={str(commit)[:12]} want={revision[:12]} {status.get('files', 0)} file(s) by {how}"
    if problems:
        shown = "; ".join(problems[:5]) + (f"; +{len(problems) - 5} more" if len(problems) > 5 else "")
        detail += f"; {shown}"
    return [Finding(host, "weights", ok, detail)]


def mirror(host: str, enabled: str | None, active: str | None, listing: Any, revision: str) -> list[Finding]:
    """A seed's LAN mirror: unit enabled and active, and it lists the pinned commit."""
    findings = [Finding(host, "mirror", enabled == "enabled" and active == "active",
                        f"r1-mirror.service {enabled or 'unknown'}, {active or 'unknown'}")]
    sha = listing.get("sha") if isinstance(listing, dict) else None
    findings.append(Finding(host, "mirror", sha == revision,
                            f"mirror lists {str(sha)[:12] if sha else repr(str(listing)[:80])}, want {revision[:12]}"))
    return findings


def agent_version(host: str, src: str, version: str | None, want: str) -> list[Finding]:
    """The host agent (base syncs the controller's own r1deploy package to src) is the controller's
    version; an older one on a host means a converge has not reached it since the upgrade."""
    if version is None:
        return [Finding(host, "agent-version", False, f"{src}/r1deploy: no host agent (controller r1deploy {want})")]
    if version != want:
        return [Finding(host, "agent-version", False,
                        f"host agent r1deploy {version}, controller r1deploy {want}: a converge updates it")]
    return [Finding(host, "agent-version", True, f"r1deploy {version}")]

"""Drift per serving group: fold the members' drift reports into one row per group that names
the member that is down. Pure (reads Findings); `r1deploy drift` adds these rows."""

from __future__ import annotations

from r1deploy.drift.runs import Finding
from r1deploy.fleet.groups import group_health
from r1deploy.serving.group import Member, ServingGroup


def member_tag(group: ServingGroup, host: str) -> str:
    """The detail of a member's "group" finding (deploy/drift.py writes it on every member)."""
    return f"group={group.name} head={group.head} rank={group.member(host).rank} size={group.size}"


def _parse(detail: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in detail.split() if "=" in part)


def group_findings(findings: list[Finding]) -> list[Finding]:
    """One "group" row per group: ok when the head answers and every member's unit runs;
    a member without a report, or a check that could not run, makes it "unknown"."""
    tags = {f.host: _parse(f.detail) for f in findings if f.check == "group"}
    by_name: dict[str, dict[str, dict[str, str]]] = {}
    for host, tag in tags.items():
        by_name.setdefault(tag["group"], {})[host] = tag
    out = []
    for name, members in sorted(by_name.items()):
        any_tag = next(iter(members.values()))
        head, size = any_tag["head"], int(any_tag["size"])
        ranked = sorted(members.items(), key=lambda kv: int(kv[1]["rank"]))
        group = ServingGroup(name, head, tuple(Member(h, int(t["rank"]), None) for h, t in ranked))
        states = {h: _unit_state(findings, h) for h in members}
        health = group_health(group, _check(findings, head, "answers"), states)
        problems = list(health.problems)
        if len(members) < size:
            problems.append(f"{size - len(members)} of {size} member(s) sent no drift report")
        ok = health.ok and len(members) == size
        state = True if ok else (False if health.status == "down" else None)
        out.append(Finding(name, "group", state, "; ".join(problems) or
                           f"head {head} answers; all {size} members run"))
    return out


def _check(findings: list[Finding], host: str, check: str) -> bool | None:
    return next((f.ok for f in findings if f.host == host and f.check == check), None)


def _unit_state(findings: list[Finding], host: str) -> str | None:
    ok = _check(findings, host, "service")
    return None if ok is None else ("active" if ok else "not running")

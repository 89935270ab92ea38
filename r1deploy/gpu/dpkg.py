"""Debian packages as dpkg and apt see them: what is installed (and held), what the configured
repositories offer, and dpkg's version order. Pure; used by the GPU roles (NVIDIA and AMD)."""

from __future__ import annotations

import re


def parse_dpkg_packages(text: str) -> dict[str, tuple[str, bool]]:
    """`dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\\n'`: installed name ->
    (version, held). Desired-state "h" is an apt-mark hold."""
    packages = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0][1:2] == "i":
            packages[parts[1]] = (parts[2], parts[0][0] == "h")
    return packages


def parse_madison(text: str) -> dict[str, list[str]]:
    """`apt-cache madison PKG...`: package -> versions the configured repos offer."""
    versions: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 3 and cells[0] and cells[1] not in versions.get(cells[0], []):
            versions.setdefault(cells[0], []).append(cells[1])
    return versions


def upstream_version(deb_version: str) -> str:
    """"580.159.04-1ubuntu1" or "1:580.159.04-1" -> "580.159.04" (what the module reports)."""
    return deb_version.split(":", 1)[-1].rsplit("-", 1)[0]


def _order(c: str) -> int:
    """dpkg's character order: "~" sorts before everything, letters before other symbols."""
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        na = re.match(r"^[^\d]*", a).group(0)
        nb = re.match(r"^[^\d]*", b).group(0)
        for x, y in zip(na + "\0" * (len(nb) - len(na)), nb + "\0" * (len(na) - len(nb)), strict=True):
            ox, oy = (0 if x == "\0" else _order(x)), (0 if y == "\0" else _order(y))
            if ox != oy:
                return -1 if ox < oy else 1
        a, b = a[len(na):], b[len(nb):]
        da = re.match(r"^\d*", a).group(0)
        db = re.match(r"^\d*", b).group(0)
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def compare_deb_versions(a: str, b: str) -> int:
    """dpkg --compare-versions as -1/0/1 (epoch, upstream, revision)."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)

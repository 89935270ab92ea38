"""Which exact package version to pin: pure decisions, tested without hosts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cmp_to_key

from r1deploy.gpu.dpkg import compare_deb_versions, upstream_version


class VersionSkew(Exception):
    """Two packages that must share a version cannot (fabric manager vs driver)."""


@dataclass(frozen=True)
class Want:
    """A version rule for `package`: an exact upstream version, else one matching `prefix`
    (e.g. "580.") and `pattern` (regex on the full version, e.g. r"\\+cuda13\\.\\d+$").

    Without an exact version the installed one is kept while it still matches, so a new
    release in the repository never upgrades (and reboots) a host by itself."""

    package: str
    upstream: str | None = None
    prefix: str | None = None
    pattern: str | None = None

    def matches(self, version: str) -> bool:
        up = upstream_version(version)
        if self.upstream and up != upstream_version(self.upstream):
            return False
        if self.prefix and not up.startswith(self.prefix):
            return False
        return not self.pattern or re.search(self.pattern, version) is not None

    def describe(self) -> str:
        if self.upstream:
            return f"{self.package} {self.upstream}"
        return f"{self.package} {self.prefix or ''}*" + (f" matching {self.pattern}" if self.pattern else "")

    def pick(self, available: list[str], installed: str | None) -> str | None:
        if installed and self.matches(installed):
            return installed  # even if the repository dropped it: it is what runs
        candidates = sorted((v for v in available if self.matches(v)), key=cmp_to_key(compare_deb_versions))
        return candidates[-1] if candidates else None


def follow(want: Want, leader_version: str | None, available: list[str], installed: str | None) -> str | None:
    """The version of `want.package` whose upstream equals the leader's (fabric manager must
    equal the driver exactly); VersionSkew names both when the repository has none."""
    if leader_version is None:
        return None
    exact = Want(want.package, upstream=upstream_version(leader_version))
    picked = exact.pick(available, installed)
    if picked is None:
        offered = ", ".join(available) or "none"
        raise VersionSkew(
            f"{want.package} must equal the driver version {upstream_version(leader_version)} exactly, "
            f"but the repository offers {offered}"
            + (f" and {installed} is installed" if installed else ""))
    return picked


def preferences(packages: list[str], version: str, why: str) -> str:
    """An apt preferences stanza holding `packages` at exactly `version` (1001 allows downgrades
    back to it; apt-mark hold stops unattended-upgrades from moving it)."""
    return (f"# Managed by r1deploy (gpu_host): {why}\n"
            f"Package: {' '.join(packages)}\n"
            f"Pin: version {version}\n"
            "Pin-Priority: 1001\n")

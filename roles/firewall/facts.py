"""What the firewall stage and the drift check read: nft's live table and the record of the last
load (roles/firewall writes it after a confirmed apply)."""

from __future__ import annotations

from pyinfra.api import FactBase

from r1deploy.fleet.firewall import FAMILY, STATE_DIR, TABLE


class FirewallState(FactBase):
    """{"nft": nft is installed, "live": `nft list table` text (None: no such table), "loaded": the
    recorded listing of the last confirmed load, "render_sha": sha256 of the render it loaded}."""

    def command(self):
        return (f"command -v nft >/dev/null && echo R1_NFT; echo R1_LIVE; "
                f"nft list table {FAMILY} {TABLE} 2>/dev/null || echo R1_NONE; "
                f"echo R1_LOADED; cat {STATE_DIR}/loaded.nft 2>/dev/null || echo R1_NONE; "
                f"echo R1_SHA; cat {STATE_DIR}/loaded.sha256 2>/dev/null || echo R1_NONE; true")

    def process(self, output):
        parts: dict[str, list[str]] = {}
        key = None
        nft = False
        for line in output:
            if line == "R1_NFT":
                nft = True
            elif line in ("R1_LIVE", "R1_LOADED", "R1_SHA"):
                key = line
                parts[key] = []
            elif key:
                parts[key].append(line)

        def text(k):
            lines = parts.get(k, [])
            return None if lines in ([], ["R1_NONE"]) or lines[-1:] == ["R1_NONE"] else "\n".join(lines) + "\n"
        sha = text("R1_SHA")
        return {"nft": nft, "live": text("R1_LIVE"), "loaded": text("R1_LOADED"),
                "render_sha": sha.strip() if sha else None}


class NftRuleset(FactBase):
    """`nft list ruleset` (the whole live ruleset, every table); None where nft is missing or fails."""

    def command(self):
        return "if out=$(nft list ruleset 2>&1); then echo R1_OK; else echo R1_FAILED; fi; printf '%s\\n' \"$out\""

    def process(self, output):
        return "\n".join(output[1:]) + "\n" if output and output[0] == "R1_OK" else None

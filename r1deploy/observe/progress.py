"""One line per long stage, for the operator: what moved, how long it took, from where. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable


def agent_result(stdout_lines: Iterable[str]) -> dict | None:
    """The JSON object the host agent prints last on stdout (None when it printed none)."""
    for line in reversed(list(stdout_lines)):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def pull_summary(stdout_lines: Iterable[str], seconds: float, source: str) -> str:
    """`weights: 3.2 GiB moved in 41.0 s (80.0 MiB/s) from <source>; 12 files, 3.2 GiB verified`."""
    result = agent_result(stdout_lines)
    if result is None:
        return f"weights: no result from the agent after {seconds:.1f} s (from {source})"
    if result.get("error"):
        return f"weights: failed after {seconds:.1f} s (from {source}): {result['error']}"
    moved = result.get("bytes_fetched", 0)
    rate = f" ({_size(moved / seconds)}/s)" if moved and seconds > 0 else ""
    files = result.get("files")
    count = len(files) if isinstance(files, list) else files
    return (f"weights: {_size(moved)} moved in {seconds:.1f} s{rate} from {source}; "
            f"{count} files, {_size(result.get('bytes', 0))} verified in {result.get('dir', '?')}")

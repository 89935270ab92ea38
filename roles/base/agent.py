"""The host agent's code on a host, as one archive: compared by one digest of the tree.

pyinfra's files.sync checks every file with its own facts (two commands a file, ~90 files): 14 s of
every converge on the lab even when nothing changed. Here one command reads the digest of the
installed tree; only when it differs (a new release, or a file edited by hand) does one archive go
up and replace the tree whole.
"""

import hashlib
import io
import tarfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from r1deploy.paths import PACKAGE

# The controller's own package (installed, or the checkout's r1deploy/), less its pyinfra side.
AGENT_SRC = PACKAGE
NOT_AGENT = {"roles", "deploys", "templates", "examples"}


def _agent_files(src: Path) -> list[Path]:
    """The files that make the agent, in byte order of their path (as `LC_ALL=C sort` orders them)."""
    found = [p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
             and p.relative_to(src).parts[0] not in NOT_AGENT]
    return sorted(found, key=lambda p: p.relative_to(src.parent).as_posix().encode())


def tree_digest(src: Path = AGENT_SRC) -> str:
    """sha1 of `sha1sum`'s lines for every file, paths relative to the tree's parent: what TreeDigest
    computes on the host for the same tree."""
    lines = "".join(f"{hashlib.sha1(p.read_bytes()).hexdigest()}  {p.relative_to(src.parent).as_posix()}\n"
                    for p in _agent_files(src))
    return hashlib.sha1(lines.encode()).hexdigest()


def tree_archive(src: Path = AGENT_SRC) -> io.BytesIO:
    """A gzipped tar of the tree (root-owned, no timestamps of this checkout)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in _agent_files(src):
            info = tarfile.TarInfo(p.relative_to(src.parent).as_posix())
            data = p.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


class TreeDigest(FactBase):
    """The digest of `parent/name` as tree_digest computes it; "" when the tree is absent."""

    def command(self, parent, tree):
        return (f"cd {parent} 2>/dev/null && [ -d {tree} ] && "
                f"find {tree} -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z "
                "| xargs -0 -r sha1sum | sha1sum | cut -d' ' -f1 || true")

    def process(self, output):
        return output[0].strip() if output else ""


@operation()
def agent_code(dest: str, src: str = str(AGENT_SRC)):
    """The tree `src` at `dest` (the agent's import path), replaced whole when its digest differs."""
    parent, name = dest.rstrip("/").rsplit("/", 1)
    tree = Path(src)
    if host.get_fact(TreeDigest, parent=parent, tree=name) == tree_digest(tree):
        host.noop(f"{dest} is this controller's agent")
        return
    archive = host.get_temp_filename(f"agent-{dest}")
    yield FileUploadCommand(tree_archive(tree), archive)
    # Extract beside, then swap: a running agent never sees half a tree.
    yield StringCommand(f"mkdir -p {parent} && rm -rf {dest}.new && mkdir {dest}.new && "
                        f"tar -xzf {archive} -C {dest}.new --strip-components=1 --no-same-owner && "
                        f"rm -rf {dest}.old && {{ [ ! -e {dest} ] || mv {dest} {dest}.old; }} && "
                        f"mv {dest}.new {dest} && rm -rf {dest}.old {archive}")

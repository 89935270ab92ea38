"""Host agent for model weights: pull a pinned repo into real files, verify every byte, publish.

    python -m r1deploy.weights pull --repo org/name --revision SHA --root /srv/models --endpoint URL
        [--token-file F] [--allow PAT ...] [--ignore PAT ...] [--extra-bytes N] [--margin-gib G] [--workers 4]
    python -m r1deploy.weights pull ... --seed URL [--seed-token-file F]   (from a LAN seed, not the hub)
    python -m r1deploy.weights plan   (same arguments as pull: JSON of bytes to fetch vs free disk)
    python -m r1deploy.weights verify --dir /srv/models/org--name/SHA [--full]
    python -m r1deploy.weights status --root /srv/models --repo org/name

Layout: ``<root>/<org>--<name>/<commit>/`` holds the files and ``.r1deploy-manifest.json``;
``<root>/<org>--<name>/current`` is a symlink to ``<commit>`` moved only after verification.

Unlike huggingface-hub's own download (which restarts a killed file from zero and checks only
sizes), each file is fetched into ``<file>.part`` with ranged requests that continue from the
bytes on disk, hashed against the tree listing (sha256 for LFS, git sha1 otherwise), and only
then renamed into place. After a killed process the whole .part is continued; after a reboot,
only up to its last fsync (``<file>.part.json`` records it per boot id). Every path of a listing
is checked before anything is written (r1deploy.guard). It runs on hosts with only
huggingface-hub, requests and pydantic; status and no-op pulls import only the standard library.
"""

import os

# Before huggingface_hub reads its constants: no telemetry, plain HTTP downloads. The hub client
# and requests are imported only on the network path: status and no-op pulls stay stdlib-fast.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

from r1deploy.weights.errors import (  # noqa: E402
    DiskSpaceError,
    IntegrityError,
    UnsafeListingError,
    WeightsError,
)
from r1deploy.weights.manifest import (  # noqa: E402
    MANIFEST,
    RemoteFile,
    digest,
    read_manifest,
    repo_base,
    status,
    verify,
)
from r1deploy.weights.pull import plan, pull, resolve  # noqa: E402

__all__ = ["MANIFEST", "DiskSpaceError", "IntegrityError", "RemoteFile", "UnsafeListingError", "WeightsError",
           "digest", "plan", "pull", "read_manifest", "repo_base", "resolve", "status", "verify"]

"""A Hub-compatible HTTP mirror: serves a directory of published repos to huggingface-hub clients.

It speaks the subset of the Hub API that ``snapshot_download``/``hf_hub_download``/``HfApi``
use (revision, tree with paging, paths-info, resolve with HEAD/GET and Range), so a seed node
can serve a model on the LAN with the same download code that talks to the real Hub.

On-disk layout under ``root``::

    <org>/<name>/refs.json                    {"main": "<commit>"}
    <org>/<name>/commits/<commit>/...files    immutable, written once by publish()
    <org>/<name>/index/<commit>.json          sizes and hashes, computed once at publish time

Hashes are never computed per request: a commit directory without an index is hashed once on
first use and its index written then. Only files under the served directory are served: every
listed path is checked (r1deploy.guard) and a file whose real path leaves it is refused.

A seed node serves its weights pull in place (``serve --pulled org/name=<root>/<org>--<name>/<commit>``):
the agent's manifest gives the hashes (no rehash of shards). With ``--upstream`` the listing of a
pull still under way comes from upstream, and a file not yet verified on disk is waited for
(``--pending-wait`` seconds, then 503): the other nodes can pull while the seed is still pulling.
With ``--token-file`` every request needs ``Authorization: Bearer <token>`` (the fleet's seed token).
"""

from r1deploy.mirror.cli import main, register
from r1deploy.mirror.index import PULL_MANIFEST, Entry, git_blob_sha1
from r1deploy.mirror.publish import publish
from r1deploy.mirror.server import MirrorHandler, MirrorServer, serve

__all__ = ["PULL_MANIFEST", "Entry", "MirrorHandler", "MirrorServer", "git_blob_sha1", "main", "publish",
           "register", "serve"]

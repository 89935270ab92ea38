"""Test helper: a real HTTP server on 127.0.0.1 that lists whatever paths a test gives it, Hub-style.

r1deploy's own mirror refuses unsafe paths, so a hostile hub or seed is this: the revision, tree
and resolve endpoints huggingface-hub uses, serving `files` (path -> bytes) for any path asked,
and recording each request's headers so tests can say what a client sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee" + "0" * 34


class ListingHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes], token: str | None = None, commit: str = COMMIT,
                 next_page: str | None = None):
        self.files, self.token, self.commit, self.next_page = files, token, commit, next_page
        self.seen: list[dict[str, str]] = []  # per request: method, path, headers
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def tree(self) -> list[dict]:
        return [{"type": "file", "path": p, "size": len(b),
                 "oid": hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()} for p, b in self.files.items()]


class _Handler(BaseHTTPRequestHandler):
    server: ListingHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path
        self.server.seen.append({"method": self.command, "path": path, **dict(self.headers.items())})
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._send(401, b'{"error": "no"}', {"X-Error-Code": "RepoNotFound"}, body)
        parts = path.split("/")
        if path.startswith("/api/models/") and "/tree/" in path:
            link = {"Link": f'<{self.server.next_page}>; rel="next"'} if self.server.next_page else {}
            return self._send(200, json.dumps(self.server.tree()).encode(), link, body)
        if path.startswith("/api/models/"):
            repo = "/".join(parts[3:5])
            info = {"id": repo, "sha": self.server.commit, "siblings": [{"rfilename": p} for p in self.server.files]}
            return self._send(200, json.dumps(info).encode(), {}, body)
        if len(parts) > 5 and parts[3] == "resolve":
            data = self.server.files.get(unquote("/".join(parts[5:])), b"")
            return self._send(200, data, {"X-Repo-Commit": self.server.commit}, body)
        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

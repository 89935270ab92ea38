"""The HTTP side: the subset of the Hub API huggingface-hub uses, with Range and sendfile."""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from r1deploy.guard import url_path_problem
from r1deploy.mirror.index import CHUNK, Entry
from r1deploy.mirror.store import HubError, Store, parse_range, sibling_json, tree_entries


class AccessLog:
    """JSON lines, one per request: what was asked and how many body bytes went out."""

    def __init__(self, path: str | None):
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - lives with the server
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(record, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many nodes x parallel downloads connect at once during a fan-out

    def __init__(self, address: tuple[str, int], root: str | os.PathLike[str], *,
                 log_path: str | None = None, max_rate: int | None = None, page_size: int = 1000,
                 token: str | None = None, pulled: dict[str, Path] | None = None, upstream: str | None = None,
                 upstream_token: str | None = None, pending_wait: float = 45.0):
        self.store = Store(root, pulled, upstream, upstream_token)
        self.pending_wait = pending_wait  # below the agent's 60 s read timeout
        self.access_log = AccessLog(log_path)
        self.max_rate = max_rate  # bytes/s per response: fair sharing of a seed's uplink
        self.page_size = page_size
        self.token = token
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, MirrorHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class MirrorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    timeout = 120  # seconds: idle keep-alive connections and stalled clients give their thread back
    server: MirrorServer
    server_version = "r1deploy-mirror"

    # ---- dispatch

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_POST(self) -> None:
        self._handle(body=True)

    def _handle(self, body: bool) -> None:
        self._sent, self._status, self._started = 0, 0, time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""  # read now, so keep-alive stays in step
        try:
            self._authorize()
            self._route(body)
        except HubError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the client left or stalled
            self.close_connection = True
        except Exception as exc:  # a bug must not leave a keep-alive client hanging
            self.close_connection = True
            if not self._status:
                self._error(HubError("ServerError", f"{type(exc).__name__}: {exc}", status=500))
            raise
        finally:
            self._log()

    def _authorize(self) -> None:
        """With a token, every request (the unit's start probe included: any answer will do) needs it."""
        if self.server.token is None:
            return
        sent = self.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {self.server.token}".encode()):  # constant time
            raise HubError("RepoNotFound", "Invalid credentials in Authorization header", status=401)

    def _route(self, body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        problem = url_path_problem("/".join(parts))  # decoded: %2e%2e and %2F count as what they mean
        if problem:
            raise HubError("EntryNotFound", f"invalid path: {problem}", status=400)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._api(parts[2:], query)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        else:
            raise HubError("RepoNotFound", f"no such endpoint: {url.path}")

    def _api(self, parts: list[str], query: dict[str, str]) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        if self.command == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo_id, rest[1])
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            return self._revision(repo_id, rest[1] if rest else "main", query)
        if len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
        raise HubError("RepoNotFound", f"no such endpoint: {self.path}")

    # ---- endpoints

    def _revision(self, repo_id: str, revision: str, query: dict[str, str]) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        files = self.server.store.files(repo_id, commit)
        blobs = query.get("blobs", "false").lower() == "true"  # model_info(files_metadata=True)
        self._json({
            "id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "disabled": False,
            "gated": False, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [sibling_json(files[p], blobs) for p in sorted(files)],
        }, commit)

    def _tree(self, repo_id: str, revision: str, path: str, query: dict[str, str]) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        recursive = query.get("recursive", "false").lower() == "true"
        listing = tree_entries(self.server.store.files(repo_id, commit), path, recursive)
        # The Hub pages by 1000 entries (50 when expanded); the cursor here is an offset.
        page = self.server.page_size if query.get("expand", "false").lower() != "true" else 50
        start = int(query.get("cursor", "0") or 0)
        headers = {}
        if start + page < len(listing):
            nxt = dict(query, cursor=str(start + page))
            qs = "&".join(f"{k}={quote(v)}" for k, v in nxt.items())
            host = self.headers.get("Host") or self.server.url.split("://", 1)[1]
            headers["Link"] = f'<http://{host}{urlsplit(self.path).path}?{qs}>; rel="next"'
        self._json(listing[start:start + page], commit, headers)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        commit = self.server.store.resolve(repo_id, revision)
        form = parse_qs(self._body.decode())
        files = self.server.store.files(repo_id, commit)
        listing = {e["path"]: e for e in tree_entries(files, "", recursive=True)}
        self._json([listing[p] for p in form.get("paths", []) if p in listing], commit)

    def _resolve(self, repo_id: str, revision: str, path: str, body: bool) -> None:
        store = self.server.store
        commit = store.resolve(repo_id, revision)
        entry = store.files(repo_id, commit).get(path)
        if entry is None:
            raise HubError("EntryNotFound", f"{path!r} not found at {commit}", commit=commit)
        try:
            span = parse_range(self.headers.get("Range"), entry.size)
        except ValueError:
            self._status = 416
            self.send_response(416)
            self._common_headers(commit, entry)
            self.send_header("Content-Range", f"bytes */{entry.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = span if span else (0, entry.size - 1)
        length = max(end - start + 1, 0)
        path = store.file_path(repo_id, commit, entry)
        if body and length and repo_id in store.pulled:
            try:
                self._open(path).close()
            except FileNotFoundError:
                raise HubError("Pending", f"{path.name} is still being pulled; retry", status=503,
                               commit=commit) from None
            path = store.file_path(repo_id, commit, entry)  # what appeared must still be under the pull
        self._status = 206 if span else 200
        self.send_response(self._status)
        self._common_headers(commit, entry)
        if span:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body and length:
            with open(path, "rb") as f:
                self._send_file(f, start, length)

    def _open(self, path: Path) -> Any:
        """The file, waiting a while for one a pull is still fetching (a pulled directory only)."""
        deadline = time.monotonic() + self.server.pending_wait
        while True:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def _common_headers(self, commit: str, entry: Entry) -> None:
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Linked-Etag", f'"{entry.etag}"')
        self.send_header("X-Linked-Size", str(entry.size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")

    # ---- plumbing

    def _send_file(self, f: Any, offset: int, length: int) -> None:
        """Body straight from the page cache with sendfile, optionally paced to max_rate."""
        rate = self.server.max_rate
        step = max(rate // 10, 1) if rate else 4 * CHUNK
        end = offset + length
        f.seek(offset)
        try:
            while (pos := f.tell()) < end:
                tick = time.monotonic()
                # socket.sendfile copes with the socket timeout and leaves f at the bytes really sent.
                if self.connection.sendfile(f, pos, min(step, end - pos)) == 0:
                    raise BrokenPipeError("client went away")
                if rate:
                    time.sleep(max((f.tell() - pos) / rate - (time.monotonic() - tick), 0))
        finally:
            self._sent += f.tell() - offset

    def _json(self, data: Any, commit: str | None = None, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if commit:
            self.send_header("X-Repo-Commit", commit)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
            self._sent += len(payload)

    def _error(self, exc: HubError) -> None:
        payload = json.dumps({"error": str(exc)}).encode()
        self._status = exc.status
        self.send_response(exc.status)
        self.send_header("X-Error-Code", exc.code)
        self.send_header("X-Error-Message", str(exc))
        if exc.commit:
            self.send_header("X-Repo-Commit", exc.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _log(self) -> None:
        # The Authorization header's presence only: its value never reaches a log.
        self.server.access_log.write({
            "ts": round(time.time(), 3), "client": self.client_address[0], "method": self.command,
            "path": urlsplit(self.path).path, "range": self.headers.get("Range"), "status": self._status,
            "bytes": self._sent, "auth": "Authorization" in self.headers,
            "ms": round((time.monotonic() - self._started) * 1000, 1),
        })

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the JSON access log replaces stderr chatter


def serve(root: str, host: str, port: int, **kwargs: Any) -> MirrorServer:
    """A bound, not yet running server (call serve_forever); port 0 picks a free port."""
    return MirrorServer((host, port), root, **kwargs)

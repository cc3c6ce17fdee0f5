"""A Hugging Face hub on 127.0.0.1 for the download tests: a real HTTP server that answers the
``/{repo}/resolve/{revision}/{file}`` requests ``hf_hub_download`` makes, with the headers the hub
sends (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``, ``X-Error-Code``) and
``Range`` requests, so that ``slm-lsp pull`` runs its real code path with ``HF_ENDPOINT`` pointed
here. It records every request, and can break a transfer halfway or report a wrong checksum."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class HubFile:
    content: bytes
    lfs: bool = True
    reported_sha256: str | None = None  # what the hub claims; None: the content's real SHA-256
    break_first_get_at: int | None = None  # the first full GET sends this many bytes, then drops the connection

    @property
    def sha256(self) -> str:
        return self.reported_sha256 or hashlib.sha256(self.content).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    # repo → revision name (branch or commit) → commit hash; commit hash → filename → file
    refs: dict[str, dict[str, str]] = field(default_factory=dict)
    trees: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def add(self, repo: str, filename: str, file: HubFile, *, revision: str = "main") -> str:
        """Publish ``file`` in ``repo`` at branch ``revision``; returns the commit hash."""
        commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
        self.refs.setdefault(repo, {})[revision] = commit
        self.refs[repo][commit] = commit
        self.trees.setdefault(commit, {})[filename] = file
        return commit

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def files_requested(self) -> list[Request]:
        """The requests for files (huggingface_hub also asks /api/... for its own telemetry)."""
        return [r for r in self.requests if "/resolve/" in r.path]

    def gets(self) -> list[Request]:
        return [r for r in self.files_requested() if r.method == "GET"]

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:  # quiet test output
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _error(self, code: str, commit: str | None = None) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body: bool) -> None:
                hub.requests.append(Request(self.command, self.path, self.headers.get("Range")))
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error("RepoNotFound")
                repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if repo not in hub.refs:
                    return self._error("RepoNotFound")
                commit = hub.refs[repo].get(revision)
                if commit is None:
                    return self._error("RevisionNotFound")
                file = hub.trees[commit].get(filename)
                if file is None:
                    return self._error("EntryNotFound", commit)
                start = 0
                if body and (wanted := self.headers.get("Range")):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                payload = file.content[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", commit)
                if file.lfs:
                    self.send_header("ETag", f'"{file.git_sha1}"')
                    self.send_header("X-Linked-Etag", f'"{file.sha256}"')
                    self.send_header("X-Linked-Size", str(len(file.content)))
                else:
                    self.send_header("ETag", f'"{file.git_sha1}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(file.content) - 1}/{len(file.content)}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not body:
                    return
                if file.break_first_get_at is not None and not start:
                    cut, file.break_first_get_at = file.break_first_get_at, None
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

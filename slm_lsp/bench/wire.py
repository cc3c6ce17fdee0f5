"""A raw LSP client over a subprocess's pipes, for the fuzz bench and the protocol tests.

It frames JSON itself (``Content-Length`` in bytes) and can also write any bytes at all, so
garbage frames, wrong lengths and invalid JSON reach the server exactly as written. A reader
thread parses the server's frames: responses are kept by id, requests from the server are
answered (``null``, or the settings for ``workspace/configuration``), notifications are counted.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_HEADER_END = b"\r\n\r\n"


class ServerGone(RuntimeError):
    """The server closed its output (it exited or crashed)."""


def frame(message: Any) -> bytes:
    """One LSP frame: the header, then the UTF-8 JSON body (lone surrogates escaped as ``\\udXXX``)."""
    body = json.dumps(message, ensure_ascii=True).encode("ascii")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def rss_bytes(pid: int) -> int:
    """Resident set size of a Linux process (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class WireClient:
    """Drives one ``slm-lsp serve`` process over stdin/stdout."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 stderr: IO[bytes] | int | None = subprocess.DEVNULL, cwd: str | None = None) -> None:
        self.process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=stderr, env=env, cwd=cwd)
        self.settings: Any = None
        """What ``workspace/configuration`` is answered with (the ``slm`` section)."""
        self.notifications: Counter[str] = Counter()
        self.unmatched: list[dict[str, Any]] = []
        """Responses with a null id: the errors for messages the server could not read."""
        self._responses: dict[Any, dict[str, Any]] = {}
        self._answered = threading.Condition()
        self._closed = False
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        # The reader never writes: answering the server's requests from it could block on a full
        # stdin pipe while the server blocks on a full stdout pipe that only the reader drains.
        self._replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._replier = threading.Thread(target=self._send_replies, name="wire-replier", daemon=True)
        self._replier.start()
        self._reader = threading.Thread(target=self._read_frames, name="wire-reader", daemon=True)
        self._reader.start()

    # -- writing

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        with self._write_lock:
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def _send_replies(self) -> None:
        while (data := self._replies.get()) is not None:
            try:
                self.send_bytes(data)
            except (OSError, ValueError):  # the server is gone or its stdin closed
                return

    def send(self, message: Any) -> None:
        self.send_bytes(frame(message))

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def next_id(self) -> int:
        return next(self._ids)

    def send_request(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        """Send a request without waiting; returns its id."""
        msg_id = self.next_id() if msg_id is None else msg_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return msg_id

    def request(self, method: str, params: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send a request and wait for its response message (``result`` or ``error``)."""
        return self.wait(self.send_request(method, params), timeout)

    # -- reading

    def wait(self, msg_id: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The response to ``msg_id``; TimeoutError when none came, ServerGone when the server exited."""
        key = _key(msg_id)
        with self._answered:
            answered = self._answered.wait_for(lambda: key in self._responses or self._closed, timeout)
            if key in self._responses:
                return self._responses.pop(key)
        if not answered:
            raise TimeoutError(f"no response to request {msg_id!r} within {timeout} s")
        raise ServerGone(f"the server exited (code {self.process.poll()}) before answering {msg_id!r}")

    def wait_unmatched(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``count`` null-id responses have come; returns them all."""
        with self._answered:
            self._answered.wait_for(lambda: len(self.unmatched) >= count or self._closed, timeout)
            return list(self.unmatched)

    def take_response(self, msg_id: Any) -> dict[str, Any] | None:
        """The response to ``msg_id`` if it has come, without waiting."""
        with self._answered:
            return self._responses.pop(_key(msg_id), None)

    def _read_frames(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            while True:
                header = b""
                while not header.endswith(_HEADER_END):
                    byte = stream.read(1)
                    if not byte:
                        return
                    header += byte
                length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = stream.read(length)
                if len(body) < length:
                    return
                self._dispatch(json.loads(body))
        finally:
            self._replies.put(None)
            with self._answered:
                self._closed = True
                self._answered.notify_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:  # a request from the server
            result = [self.settings] * len(message.get("params", {}).get("items", [])) \
                if message["method"] == "workspace/configuration" else None
            self._replies.put(frame({"jsonrpc": "2.0", "id": message["id"], "result": result}))
        elif "method" in message:
            self.notifications[message["method"]] += 1
        else:
            with self._answered:
                if message.get("id") is None:
                    self.unmatched.append(message)
                else:
                    self._responses[_key(message["id"])] = message
                self._answered.notify_all()

    # -- lifecycle

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid)

    def initialize(self, initialization_options: Any = None, capabilities: Any = None,
                   root_uri: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        response = self.request("initialize", {
            "processId": os.getpid(), "rootUri": root_uri, "capabilities": capabilities or {},
            "initializationOptions": initialization_options}, timeout)
        self.notify("initialized", {})
        return response

    def close(self, timeout: float = 10.0) -> int:
        """shutdown + exit, then wait (kill after ``timeout``); returns the exit code."""
        if self.alive:
            try:
                self.request("shutdown", None, timeout)
                self.notify("exit")
            except (OSError, TimeoutError, ServerGone):
                pass
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        return code

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(msg_id: Any) -> Any:
    """Response ids as dict keys (a fuzzed id may be any JSON value)."""
    return json.dumps(msg_id, sort_keys=True)


def did_open(uri: str, text: str, language_id: str = "python", version: int = 1) -> dict[str, Any]:
    return {"textDocument": {"uri": uri, "languageId": language_id, "version": version, "text": text}}


def position_params(uri: str, line: int, character: int) -> dict[str, Any]:
    """textDocument/inlineCompletion params (also fine for textDocument/completion)."""
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}}

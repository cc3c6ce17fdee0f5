"""Real servers for the remote backends' tests, over real sockets on 127.0.0.1.

* ``LlamaCppServer``: llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
  with a GGUF model, in a child process; its log (uvicorn's access lines, llama.cpp's
  ``prefix-match hit`` lines, ``Disconnected from client``) is what the tests observe.
* ``SilentServer``: a socket that accepts connections, records what it receives and never
  answers (a hung server); the bytes it recorded are the request bodies the client sent.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from slm_lsp.bench.team import find_llama_server, free_port
from slm_lsp.engine.remote import RemoteBackend

SERVER_START_S = 60.0


class ServerProcess:
    """A server in a child process on a free port of 127.0.0.1, its output in a log the tests read."""

    name = "server"
    ready_path = "/health"

    def __init__(self, command_for_port, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command_for_port(self.port), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            try:
                if self.ready(httpx.get(self.url + self.ready_path, timeout=1.0, trust_env=False)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {SERVER_START_S} s:\n{self.log()[-2000:]}")

    def ready(self, response: httpx.Response) -> bool:
        return response.status_code == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 15.0) -> bool:
        """Wait until ``pattern`` occurs ``count`` times in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """Die at once, as a crashed or OOM-killed server does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class LlamaCppServer(ServerProcess):
    """llama-cpp-python's ``python -m llama_cpp.server --model MODEL``."""

    ready_path = "/v1/models"

    def __init__(self, model: Path, log_dir: Path, api_key: str | None = None, name: str = "llama-cpp-server") -> None:
        self.name = name
        self.api_key = api_key

        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                    "--port", str(port), "--n_threads", "1", "--n_ctx", "4096",
                    *(["--api_key", api_key] if api_key else [])]

        # Unbuffered: the tests read the log while the server runs.
        super().__init__(command, log_dir, {**os.environ, "PYTHONUNBUFFERED": "1"})

    def ready(self, response: httpx.Response) -> bool:
        return True  # any answer (a 401 without the key too): it is up

    def requests(self) -> list[tuple[str, str]]:
        """(client address, status) of each completion request in uvicorn's access log."""
        return re.findall(r'(127\.0\.0\.1:\d+) - "POST /v1/completions HTTP/1\.1" (\d+)', self.log())


class SilentServer:
    """Accepts connections and reads what comes, never answering."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.received = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data

    def body(self) -> str:
        with self._lock:
            return self.received.decode("utf-8", errors="replace")

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        with self._lock:
            for conn in self._open:
                conn.close()


def llama_server_binary() -> Path | None:
    """llama.cpp's llama-server as ``bench team`` finds it (None: the tests that need it are skipped)."""
    return find_llama_server()


class LlamaServer(ServerProcess):
    """llama.cpp's ``llama-server -m MODEL -np SLOTS`` in a child process; its log is observed."""

    name = "llama-server"

    def __init__(self, binary: Path, model: Path, log_dir: Path, slots: int = 2, ctx: int = 8192) -> None:
        super().__init__(lambda port: [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                       "-np", str(slots), "-c", str(ctx), "-t", "1", "--no-webui"], log_dir)

    def slots(self) -> list[dict]:
        return list(httpx.get(self.url + "/slots", timeout=5.0, trust_env=False).json())


async def cancel_mid_stream(remote: RemoteBackend, prompt: str, stop: list[str], max_tokens: int) -> int:
    """Start streaming an answer of up to ``max_tokens``, cancel it after its third token, and
    return how many tokens came; the caller checks the server's own log for the disconnect."""
    tokens: list[str] = []

    def stop_at(text: str) -> int | None:
        tokens.append(text)
        return None

    task = asyncio.create_task(remote.stream(prompt, max_tokens=max_tokens, stop=stop, stop_at=stop_at))
    while len(tokens) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return len(tokens)
    raise AssertionError("the cancelled stream finished instead of being cancelled")

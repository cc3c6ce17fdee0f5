"""``slm-lsp bench fuzz``: random and mutated messages, then a cancel storm while typing, over stdio.

The messages come from one vocabulary (``Fuzzer``) that takes its choices from a ``Draw``: a
seeded ``random.Random`` here, hypothesis in ``tests/e2e/test_fuzz.py``. Positions in and out of
range, inverted ranges, lone surrogates, NULs, huge lines, unknown methods and documents, garbage
frames, cancels of in-flight and unknown ids, garbage settings (in didChangeConfiguration and in
the reply to workspace/configuration) and adapter commands. Every
``--checkpoint-every`` messages a normal inline completion must be answered, and every request
sent so far must have had its answer (LSP answers a cancelled request too). The storm types into
an open document at ``--rate`` requests a second and cancels most of them.

Reported: checkpoints answered, requests unanswered (must be 0) and the growth of the server's
resident memory from the first answered checkpoint (must stay under 100 MB). The exit status is 1
when either fails. Any GGUF model works; the test suite runs it with its tiny generated model.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .wire import ServerGone, WireClient, did_open, frame, position_params

T = TypeVar("T")

KNOWN_URI = "file:///fuzz/known.py"
KNOWN_TEXT = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        return \n"
KNOWN_POSITION = (5, 15)
RSS_LIMIT_BYTES = 100 * 1000 * 1000

URIS = [KNOWN_URI, "file:///fuzz/other.ts", "file:///fuzz/b%C3%A9%20d.py", "untitled:Untitled-1",
        "file:///fuzz/never-opened.py", "file:///dev/zero", "file:///proc/self/mem", "file:///etc/passwd",
        "file:///fuzz/%ZZ%00.py", "file://host/share/x.py", "not a uri", "", "file:///" + "a" * 5000]
LANGUAGES = ["python", "typescript", "rust", "go", "plaintext", "", "💥", "a" * 300]
PIECES = ["def ", "return ", "self.", "x", "    ", "\t", "\n", "\r\n", "\r", "\x00", "\ud800", "\udfff", "\ud83d",
          "😀", "é", "\u2028", "\ufeff", "中文", "\\", '"', "{", "}", "Content-Length: 5\r\n\r\n", "<|fim_middle|>",
          "<|endoftext|>", "# comment", "'''"]
NUMBERS: list[Any] = [0, 1, -1, 3, 7, 2**31, 2**31 - 1, 2**32, 2**53, 2**63, 2**64, 10**9, 1e9, 1e308, -1e308, 0.5,
                      -0.0, 10**30]
SETTINGS = {"completion": ["prefixTokens", "suffixTokens", "maxTokens", "maxLines", "timeBudgetMs", "enabledLanguages",
                           "nearLines", "kvShift", "suffixRefreshTokens", "prefix_tokens"],
            "context": ["enabled", "maxTokens", "sources", "timeBudgetMs", "maxFileKb", "maxFiles", "exclude", "watch"],
            "model": ["nGpuLayers", "adapter", "threads", "nCtx", "path"],
            "logLevel": [], "junk": []}
METHODS = ["textDocument/inlineCompletion", "textDocument/completion", "textDocument/hover", "workspace/executeCommand",
           "completionItem/resolve", "initialize", "slm/unknown", "", "$/setTrace", "$/progress", "\x00", "a" * 1000]


class Draw(Protocol):
    """Where the fuzzer's choices come from."""

    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...


class RandomDraw:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)


def fuzz_text(draw: Draw, max_pieces: int = 12) -> str:
    """Code-like text with any code point (lone surrogates too), NULs, line breaks of all kinds and,
    now and then, a line of up to 200,000 characters."""
    parts = []
    for _ in range(draw.integer(0, max_pieces)):
        kind = draw.integer(0, 19)
        if kind < 3:
            parts.append(chr(draw.integer(0, 0x10FFFF)))
        elif kind == 3 and draw.integer(0, 7) == 0:
            parts.append(draw.choice(["a", "x(", "é", "\ud800"]) * draw.integer(1000, 200_000))
        else:
            parts.append(draw.choice(PIECES))
    return "".join(parts)


def fuzz_json(draw: Draw, depth: int = 2) -> Any:
    kind = draw.integer(0, 7 if depth > 0 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return draw.choice([True, False])
    if kind == 2:
        return draw.choice(NUMBERS)
    if kind in (3, 4):
        return fuzz_text(draw, 4)
    if kind == 5:
        return [fuzz_json(draw, depth - 1) for _ in range(draw.integer(0, 3))]
    keys = ["jsonrpc", "id", "method", "params", "slm", "completion", "uri", "line", "character", "textDocument"]
    return {draw.choice(keys) if draw.integer(0, 2) else fuzz_text(draw, 2): fuzz_json(draw, depth - 1)
            for _ in range(draw.integer(0, 4))}


def fuzz_index(draw: Draw) -> Any:
    kind = draw.integer(0, 9)
    if kind < 6:
        return draw.integer(0, 12)  # mostly near the text of the open documents
    if kind < 8:
        return draw.choice([-1, 2**31 - 1, 2**31, 2**53, 10**6, 1 << 40])
    return draw.choice([1.5, "3", None, [], {}, True])


def fuzz_position(draw: Draw) -> Any:
    if draw.integer(0, 19) == 0:
        return fuzz_json(draw)
    position = {"line": fuzz_index(draw), "character": fuzz_index(draw)}
    if draw.integer(0, 19) == 0:
        del position[draw.choice(["line", "character"])]
    return position


def fuzz_range(draw: Draw) -> Any:
    start, end = fuzz_position(draw), fuzz_position(draw)
    if draw.integer(0, 3) == 0 and isinstance(start, dict) and isinstance(end, dict):
        start, end = end, start  # an inverted range, more often than chance
    return {"start": start, "end": end}


def fuzz_settings(draw: Draw) -> Any:
    """A ``slm`` section with absurd values in real settings, wrong types and nested junk."""
    if draw.integer(0, 9) == 0:
        return fuzz_json(draw)
    settings: dict[str, Any] = {}
    for _ in range(draw.integer(1, 4)):
        section = draw.choice(list(SETTINGS))
        keys = SETTINGS[section]
        if not keys:
            settings[section] = fuzz_json(draw)
            continue
        value = draw.choice(NUMBERS) if draw.integer(0, 1) else fuzz_json(draw)
        settings.setdefault(section, {})
        if isinstance(settings[section], dict):
            settings[section][draw.choice(keys)] = value
    return settings


class Fuzzer:
    """Sends one fuzzed message per ``step`` and keeps the ids of the requests awaiting answers."""

    def __init__(self, client: WireClient, adapter_junk: Path | None = None) -> None:
        self.client = client
        self.pending: list[Any] = []
        self.sent = 0
        self.requests = 0
        self.adapter_paths = ["", "/nonexistent/adapter.gguf", "/dev/null", "/dev/zero", "/etc", "relative.gguf",
                              "\x00", str(adapter_junk) if adapter_junk else "/tmp"]
        self._steps: list[Callable[[Draw], None]] = [
            self.did_open, self.did_change, self.did_change, self.did_close, self.completion, self.completion,
            self.completion, self.cancel, self.cancel, self.configuration, self.execute_command, self.unknown_method,
            self.garbage_frame, self.mutated_message,
        ]

    def step(self, draw: Draw) -> None:
        draw.choice(self._steps)(draw)
        self.sent += 1

    def request(self, method: str, params: Any) -> Any:
        msg_id = self.client.send_request(method, params)
        self.pending.append(msg_id)
        self.requests += 1
        return msg_id

    def did_open(self, draw: Draw) -> None:
        uri = draw.choice(URIS[1:])  # the known document keeps its text for the checkpoints
        self.client.notify("textDocument/didOpen", did_open(uri, fuzz_text(draw, 30), draw.choice(LANGUAGES),
                                                            draw.choice([1, 0, -1, 2**31])))

    def did_change(self, draw: Draw) -> None:
        changes: list[Any] = []
        for _ in range(draw.integer(0, 3)):
            kind = draw.integer(0, 5)
            if kind == 0:
                changes.append({"text": fuzz_text(draw, 20)})
            elif kind == 1:
                changes.append(fuzz_json(draw))
            else:
                changes.append({"range": fuzz_range(draw), "text": fuzz_text(draw, 3)})
        uri = draw.choice(URIS)
        if uri == KNOWN_URI:  # its text stays as the checkpoint needs it: edits go to a copy
            uri = "file:///fuzz/known-copy.py"
        self.client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": draw.integer(-1, 99)},
                                                      "contentChanges": changes})

    def did_close(self, draw: Draw) -> None:
        uri = draw.choice(URIS[1:])
        self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def completion(self, draw: Draw) -> None:
        params = position_params(draw.choice(URIS), 0, 0)
        params["position"] = fuzz_position(draw)
        if draw.integer(0, 9) == 0:
            params["context"] = {"triggerKind": draw.choice([0, 1, 2, 3, -1, "x"])}
        self.request(draw.choice(["textDocument/inlineCompletion", "textDocument/completion"]), params)

    def cancel(self, draw: Draw) -> None:
        kind = draw.integer(0, 3)
        target: Any
        if kind < 2:
            # The draws never depend on what is pending (hypothesis replays a choice sequence and
            # must see the same draws; an aborted example can leave requests pending).
            index, recent = draw.integer(0, 7), self.pending[-8:]
            target = recent[index % len(recent)] if recent else index  # in flight, or just answered
        elif kind == 2:
            target = draw.integer(10**6, 10**7)  # an id never used
        else:
            target = fuzz_json(draw, 1)
        self.client.notify("$/cancelRequest", {"id": target})

    def configuration(self, draw: Draw) -> None:
        # The server asks for its section (workspace/configuration) and gets garbage there too.
        self.client.settings = fuzz_settings(draw)
        settings = fuzz_settings(draw)
        self.client.notify("workspace/didChangeConfiguration",
                           {"settings": {"slm": settings} if draw.integer(0, 3) else settings})

    def execute_command(self, draw: Draw) -> None:
        kind = draw.integer(0, 3)
        if kind < 2:
            arguments: Any = [draw.choice(self.adapter_paths)]
        elif kind == 2:
            arguments = [fuzz_json(draw, 1) for _ in range(draw.integer(0, 3))]
        else:
            arguments = fuzz_json(draw, 1)
        self.request("workspace/executeCommand", {"command": draw.choice(["slm.loadAdapter", "slm.loadAdapter",
                                                                          "slm.status", "slm.nope", ""]),
                                                  "arguments": arguments})

    def unknown_method(self, draw: Draw) -> None:
        method = draw.choice(METHODS)
        if draw.integer(0, 1):
            self.request(method, fuzz_json(draw))
        else:
            self.client.notify(method, fuzz_json(draw))

    def garbage_frame(self, draw: Draw) -> None:
        kind = draw.integer(0, 5)
        if kind == 0:
            data = bytes(draw.integer(0, 255) for _ in range(draw.integer(1, 64)))
        elif kind == 1:
            length = draw.choice([b"-1", b"99999999999999999999", b"%d" % 2**40, b"abc", b"", b"1e3"])
            data = b"Content-Length: " + length + b"\r\n\r\n{}"
        elif kind == 2:
            body = fuzz_text(draw, 6).encode("utf-8", "surrogatepass")
            data = b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif kind == 3:
            data = frame(fuzz_json(draw))
        elif kind == 4:  # a batch: its requests are answered with errors
            batch = [{"jsonrpc": "2.0", "id": self.client.next_id(), "method": "workspace/executeCommand",
                      "params": {"command": "slm.status"}} for _ in range(draw.integer(1, 3))]
            self.pending.extend(message["id"] for message in batch)
            self.requests += len(batch)
            data = frame(batch)
        else:
            data = b"Content-Length: 2\r\n\r\n{}"
        self.client.send_bytes(data)

    def mutated_message(self, draw: Draw) -> None:
        """A valid request with one field replaced or removed; it keeps its id, so it must be answered."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.client.next_id(),
                                   "method": "textDocument/inlineCompletion",
                                   "params": position_params(KNOWN_URI, *KNOWN_POSITION)}
        path = draw.choice([("params",), ("params", "textDocument"), ("params", "position"), ("params", "context"),
                            ("params", "textDocument", "uri"), ("params", "position", "line"), ("jsonrpc",)])
        parent = message
        for key in path[:-1]:
            parent = parent[key]
        if draw.integer(0, 2):
            parent[path[-1]] = fuzz_json(draw)
        else:
            del parent[path[-1]]
        self.client.send(message)
        self.pending.append(message["id"])
        self.requests += 1

    def settle(self, timeout: float) -> list[Any]:
        """Wait for the answers to every pending request; returns the ids with none."""
        deadline = time.monotonic() + timeout
        unanswered = []
        for msg_id in self.pending:
            try:
                self.client.wait(msg_id, max(0.1, deadline - time.monotonic()))
            except (TimeoutError, ServerGone):
                unanswered.append(msg_id)
        self.pending.clear()
        return unanswered


def checkpoint(client: WireClient, timeout: float = 60.0) -> bool:
    """A normal inline completion on the known document gets a result, and the server is alive."""
    try:
        response = client.request("textDocument/inlineCompletion", position_params(KNOWN_URI, *KNOWN_POSITION),
                                  timeout)
    except (TimeoutError, ServerGone, OSError):
        return False
    return "result" in response and client.alive


def start_server(command: Sequence[str], stderr: Any = subprocess.DEVNULL) -> WireClient:
    client = WireClient(command, stderr=stderr)
    client.initialize({"completion": {"maxTokens": 8}}, capabilities={"workspace": {"configuration": True}})
    client.notify("textDocument/didOpen", did_open(KNOWN_URI, KNOWN_TEXT))
    return client


def serve_command(model: str | None) -> list[str]:
    """The server under test: one thread and a fixed context (settings cannot grow it past the CLI's)."""
    return [sys.executable, "-m", "slm_lsp", "serve", "--threads", "1", "--ctx", "2048",
            *(["--model", model] if model else [])]


def type_with_cancel_storm(client: WireClient, fuzzer: Fuzzer, seconds: float, rate: float,
                           rng: random.Random) -> int:
    """Type into a copy of the known document at ``rate`` completion requests a second, cancelling
    nine in ten of them right after the next keystroke; returns the requests sent."""
    uri, line = "file:///fuzz/storm.py", 5
    text = KNOWN_TEXT
    client.notify("textDocument/didOpen", did_open(uri, text))
    column, version, sent = len(text.splitlines()[line]), 1, 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        typed = rng.choice("abcdefghijklmnopqrstuvwxyz_.( ")
        version += 1
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
            {"range": {"start": {"line": line, "character": column}, "end": {"line": line, "character": column}},
             "text": typed}]})
        if fuzzer.pending and rng.random() < 0.9:
            client.notify("$/cancelRequest", {"id": fuzzer.pending[-1]})
        column += 1
        fuzzer.request("textDocument/inlineCompletion", position_params(uri, line, column))
        sent += 1
        if column > 200:  # a new line keeps the prompt short
            version += 1
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": [{"text": text}]})
            column = len(text.splitlines()[line])
        time.sleep(max(0.0, sent / rate - elapsed))
    return sent


def run_fuzz_bench(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    draw = RandomDraw(args.seed)
    with tempfile.TemporaryDirectory(prefix="slm-lsp-fuzz-") as tmp:
        junk = Path(tmp) / "junk-adapter.gguf"
        junk.write_bytes(b"GGUF" + rng.randbytes(4096))
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            client = start_server(serve_command(args.model), stderr=log)
            try:
                return _run(client, Fuzzer(client, junk), draw, rng, args, log_path)
            finally:
                client.close()


def _run(client: WireClient, fuzzer: Fuzzer, draw: Draw, rng: random.Random, args: argparse.Namespace,
         log_path: Path) -> int:
    t0 = time.monotonic()
    if not checkpoint(client, timeout=300):
        print(f"error: the server did not answer a first completion (its log: {log_path.read_text()[-2000:]})",
              file=sys.stderr)
        return 1
    rss_start = rss_peak = client.rss_bytes()
    checkpoints, answered, unanswered = 0, 0, []

    def check() -> None:
        nonlocal checkpoints, answered, rss_peak
        unanswered.extend(fuzzer.settle(args.timeout))
        checkpoints += 1
        answered += checkpoint(client, args.timeout)
        if client.alive:
            rss_peak = max(rss_peak, client.rss_bytes())

    while fuzzer.sent < args.messages and client.alive:
        fuzzer.step(draw)
        if fuzzer.sent % args.checkpoint_every == 0:
            check()
    check()
    fuzz_s = time.monotonic() - t0
    storm = type_with_cancel_storm(client, fuzzer, args.storm_seconds, args.rate, rng) if client.alive else 0
    check()
    rss_end = client.rss_bytes() if client.alive else rss_peak
    growth = rss_end - rss_start
    mb = 1e6
    print(f"messages {fuzzer.sent} fuzzed in {fuzz_s:.0f} s, then {storm} typed completion requests in "
          f"{args.storm_seconds:.0f} s (about 9 in 10 cancelled)")
    print(f"requests sent {fuzzer.requests + checkpoints}, unanswered {len(unanswered)}"
          + (f" (ids {unanswered[:10]})" if unanswered else ""))
    print(f"checkpoints answered {answered}/{checkpoints}")
    print(f"server RSS {rss_start / mb:.0f} MB at start, {rss_end / mb:.0f} MB at end (growth {growth / mb:+.1f} MB, "
          f"limit {RSS_LIMIT_BYTES / mb:.0f} MB), peak {rss_peak / mb:.0f} MB")
    ok = client.alive and not unanswered and answered == checkpoints and growth < RSS_LIMIT_BYTES
    print("PASS" if ok else f"FAIL (server {'alive' if client.alive else f'exited {client.process.poll()}'}; "
                            f"its log ends: {log_path.read_text(errors='replace')[-1500:]})")
    return 0 if ok else 1

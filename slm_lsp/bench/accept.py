"""``slm-lsp bench accept``: the time from accepting a suggestion to the next one, over the wire.

A ``slm-lsp serve`` process is driven as VS Code drives it: at each of ``--cycles`` places in the
file (a line cut in the middle, as if typed that far) it asks for a suggestion, then accepts it:
the ``didChange`` that inserts it, then the item's ``slm.accepted`` command; after the client's
debounce (``--debounce-ms``) it asks at the new cursor, and so on ``--chain`` accepts in a row.
The user looks at each suggestion for ``--read-ms`` before accepting it. The time measured runs
from the accept to the answer at the new cursor: what the user waits for the next ghost text.
A second server with ``completion.prefetch_on_accept`` off takes its turn at each place right
after the first, in the same run (so a machine whose load changes weighs on both alike).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import percentile, summary
from .wire import WireClient, did_open, position_params

URI = "file:///bench/accept.py"


def places(text: str, cycles: int) -> list[tuple[str, int, int]]:
    """(document, line, column) for ``cycles`` lines spread over ``text``: the line cut in its
    middle (the rest of the line not typed yet), the lines after it unchanged."""
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if len(line.strip()) >= 12]
    if not candidates:
        raise SystemExit("the file has no line of 12 characters or more to cut")
    step = max(1, len(candidates) // max(cycles, 1))
    out = []
    for i in candidates[::step][:cycles]:
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        cut = indent + (len(line) - indent) // 2
        out.append(("\n".join(lines[:i] + [line[:cut]] + lines[i + 1:]), i, cut))
    return out


def after(line: int, character: int, text: str) -> tuple[int, int]:
    """The cursor once ``text`` is inserted at (line, character), in UTF-16 units."""
    parts = text.split("\n")
    units = len(parts[-1].encode("utf-16-le")) // 2
    return (line, character + units) if len(parts) == 1 else (line + len(parts) - 1, units)


class Session:
    """One server, with prefetching on or off."""

    def __init__(self, args: argparse.Namespace, model: str, prefetch: bool, text: str) -> None:
        self.prefetch = prefetch
        command = [sys.executable, "-m", "slm_lsp", "serve", "--model", model]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        if args.ctx is not None:
            command += ["--ctx", str(args.ctx)]
        self.client = WireClient(command)
        options = {"completion": {"prefetchOnAccept": prefetch}, "context": {"enabled": False}}
        self.client.settings = options
        self.client.initialize(options, capabilities={"workspace": {"configuration": True}})
        self.version = 1
        self.client.notify("textDocument/didOpen", did_open(URI, text))
        deadline = time.monotonic() + 300
        while self.status()["state"] != "ready":
            if time.monotonic() > deadline:
                raise SystemExit(f"the model did not load: {self.status()}")
            time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        return self.client.request("workspace/executeCommand", {"command": "slm.status", "arguments": []},
                                   timeout=60)["result"]

    def reset(self, text: str) -> None:
        self.version += 1
        self.client.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": self.version},
                                                      "contentChanges": [{"text": text}]})

    def suggest(self, line: int, character: int) -> dict[str, Any] | None:
        response = self.client.request("textDocument/inlineCompletion", position_params(URI, line, character),
                                       timeout=120)
        items = (response.get("result") or {}).get("items") or []
        return items[0] if items and items[0].get("insertText") else None

    def accept(self, item: dict[str, Any], line: int, character: int) -> None:
        """What VS Code sends on Tab: the edit, then the item's command (when it has one)."""
        self.version += 1
        at = {"line": line, "character": character}
        self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": self.version},
            "contentChanges": [{"range": {"start": at, "end": at}, "text": item["insertText"]}]})
        if item.get("command"):
            command = item["command"]
            self.client.send_request("workspace/executeCommand", {"command": command["command"],
                                                                  "arguments": command.get("arguments", [])})

    def close(self) -> None:
        self.client.close()


def one_place(args: argparse.Namespace, session: Session, doc: str, line: int, column: int,
              out: dict[str, list[Any]]) -> None:
    """At one place: the suggestion, then ``--chain`` accepts, each timed to the next answer."""
    session.reset(doc)
    item = session.suggest(line, column)  # the suggestion to accept (not measured)
    for _ in range(args.chain):
        if item is None:
            return
        time.sleep(args.read_ms / 1000)  # the user reads the suggestion, then presses Tab
        t_accept = time.perf_counter()
        session.accept(item, line, column)
        line, column = after(line, column, item["insertText"])
        time.sleep(args.debounce_ms / 1000)  # the client waits this long before it asks
        t_request = time.perf_counter()
        item = session.suggest(line, column)
        done = time.perf_counter()
        out["waits"].append((done - t_accept) * 1000)
        out["requests"].append((done - t_request) * 1000)
        out["shown"].append(item is not None)
        if args.verbose:
            what = repr(item["insertText"][:40]) if item else "nothing"
            print(f"  {'on ' if session.prefetch else 'off'} {line + 1}:{column}: {out['waits'][-1]:6.0f} ms "
                  f"(request {out['requests'][-1]:6.0f} ms) {what}")
        time.sleep(args.pause_ms / 1000)  # the user reads what was accepted


def run_accept_bench(args: argparse.Namespace) -> int:
    from .. import cli
    from ..config import merge_config
    from ..models import resolve_model

    config = merge_config(cli.cli_settings(args)).config
    model = str(resolve_model(config.model.path))
    text = Path(args.file).read_text(encoding="utf-8")
    cases = places(text, args.cycles)
    print(f"model {Path(model).name}, threads {args.threads or 'auto'}; {len(cases)} places in {args.file}, "
          f"{args.chain} accepts in a row each, {args.read_ms} ms to read each suggestion, the client's debounce "
          f"{args.debounce_ms} ms; the two servers take turns, place by place")
    sessions = [Session(args, model, True, text), Session(args, model, False, text)]
    results: dict[bool, dict[str, list[Any]]] = {s.prefetch: {"waits": [], "requests": [], "shown": []}
                                                 for s in sessions}
    try:
        for doc, line, column in cases:
            for session in sessions:  # the same place on both, one right after the other
                one_place(args, session, doc, line, column, results[session.prefetch])
        counts = {s.prefetch: s.status() for s in sessions}
    finally:
        for session in sessions:
            session.close()
    rows = {}
    for prefetch in (True, False):
        r = results[prefetch]
        rows[prefetch] = [w for w, shown in zip(r["waits"], r["shown"]) if shown]
        label = "prefetch on " if prefetch else "prefetch off"
        print(f"{label}: accept → next suggestion {summary(rows[prefetch])}")
        print(f"{'':13} with empty answers too  {summary(r['waits'])}")
        print(f"{'':13} the request itself      {summary(r['requests'])}")
        print(f"{'':13} answered by {counts[prefetch].get('answered')}, prefetches {counts[prefetch].get('prefetch')}")
    for what, on_ms, off_ms in (("answers with text", rows[True], rows[False]),
                                ("all answers", results[True]["waits"], results[False]["waits"])):
        if on_ms and off_ms:
            on, off = percentile(on_ms, 50), percentile(off_ms, 50)
            print(f"p50 accept → next answer ({what}): {on:.0f} ms with the prefetch, {off:.0f} ms without "
                  f"({off - on:+.0f} ms saved)")
    return 0


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("file", help="a source file to accept suggestions in")
    b.add_argument("--cycles", type=int, default=20, help="places in the file (each: a suggestion, then accepts)")
    b.add_argument("--chain", type=int, default=2, help="accepts in a row at each place")
    b.add_argument("--debounce-ms", type=int, default=150,
                   help="the client's wait before it asks at the new cursor (slm.debounceMs, debounce_ms: 150)")
    b.add_argument("--read-ms", type=int, default=400,
                   help="time the user looks at a suggestion before accepting it (not counted)")
    b.add_argument("--pause-ms", type=int, default=300, help="idle time after each measured suggestion")
    b.add_argument("-v", "--verbose", action="store_true", help="print every accept")

"""``slm/loopStall``: how long the event loop was kept from running, for ``slm-lsp bench loop``.

Everything the server answers goes through one event loop: a handler that computes for 50 ms
(or a thread that holds the GIL that long) delays every message behind it. A heartbeat task
sleeps ``HEARTBEAT_S`` at a time and records how much later than asked it woke: the longest
such lateness is the longest stall (to within one heartbeat). It starts with the first
``slm/loopStall`` request, so a server nobody measures pays nothing.

Params: ``{"reset": true}`` starts a new measurement after this answer. The result:
``{"maxStallMs", "beats", "stallsOver20Ms", "seconds"}`` since the last reset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server import SlmLanguageServer

log = logging.getLogger(__name__)

LOOP_STALL_REQUEST = "slm/loopStall"
TRACE_ENV = "SLM_LSP_STALL_TRACE"
"""Set (to 1) to log every thread's stack while the loop is stalled past ``STALL_MS``: a
watchdog thread looks every few milliseconds (it runs whenever the stalling thread lets go
of the GIL, so it sees Python-level culprits, not a single long C call)."""
HEARTBEAT_S = 0.002
STALL_MS = 20.0
"""The budget a stall is counted against (``stallsOver20Ms``)."""


class LoopStallMonitor:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._last_beat = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        self.max_stall_ms = 0.0
        self.beats = 0
        self.over = 0
        self.since = time.perf_counter()

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            loop.slow_callback_duration = STALL_MS / 1000  # in asyncio debug mode: the culprits are logged
            self._task = loop.create_task(self._beat())
            if os.environ.get(TRACE_ENV):
                threading.Thread(target=self._watch, args=(threading.get_ident(),), name="slm-stall-trace",
                                 daemon=True).start()

    def _watch(self, loop_thread: int) -> None:
        traced = 0.0
        while True:
            time.sleep(HEARTBEAT_S)
            since = time.perf_counter() - self._last_beat
            if since * 1000 > STALL_MS and self._last_beat != traced:
                traced = self._last_beat
                names = {t.ident: t.name for t in threading.enumerate()}
                stacks = [f"--- {names.get(ident, ident)}{' (the loop)' if ident == loop_thread else ''}\n"
                          + "".join(traceback.format_stack(frame)[-6:])
                          for ident, frame in sys._current_frames().items() if ident != threading.get_ident()]
                log.warning("event loop stalled for %.0f ms so far:\n%s", since * 1000, "".join(stacks))

    async def _beat(self) -> None:
        while True:
            t0 = time.perf_counter()
            self._last_beat = t0
            await asyncio.sleep(HEARTBEAT_S)
            late_ms = (time.perf_counter() - t0 - HEARTBEAT_S) * 1000
            self.beats += 1
            self.max_stall_ms = max(self.max_stall_ms, late_ms)
            self.over += late_ms > STALL_MS

    def read(self, reset: bool = False) -> dict[str, Any]:
        out = {"maxStallMs": round(self.max_stall_ms, 2), "beats": self.beats, "stallsOver20Ms": self.over,
               "seconds": round(time.perf_counter() - self.since, 3)}
        if reset:
            self._reset()
        return out


def register(server: "SlmLanguageServer") -> None:
    monitor = LoopStallMonitor()

    @server.feature(LOOP_STALL_REQUEST)
    def loop_stall(ls: "SlmLanguageServer", params: Any) -> dict[str, Any]:
        monitor.start()
        reset = params.get("reset") if isinstance(params, dict) else getattr(params, "reset", False)
        return monitor.read(bool(reset))

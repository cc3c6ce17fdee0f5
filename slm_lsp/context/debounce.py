"""One debounce scheduler: a single thread that runs each key's job once its deadline passes.

Typing and file-system events come in bursts; each burst should cost one job once it pauses,
not one ``threading.Timer`` (a thread) per event. ``schedule(key, delay, job)`` replaces the
key's pending job and moves its deadline; the thread runs due jobs one at a time, in deadline
order, and logs a job that raises (the next one still runs). ``flush()`` runs the pending jobs
now and waits for them; ``close()`` stops the thread, dropping or first running what is left.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Job:
    deadline: float
    seq: int
    run: Callable[[], None]


class Debouncer:
    """Keyed deadlines served by one daemon thread (started on the first ``schedule``)."""

    def __init__(self, name: str = "slm-debounce") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._jobs: dict[Hashable, _Job] = {}
        self._running: int | None = None
        """The ``seq`` of the job being run, if any."""
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.runs = 0
        """Jobs run so far (tests and status read it)."""

    # -- the public surface -----------------------------------------------------------------
    def schedule(self, key: Hashable, delay: float, job: Callable[[], None]) -> None:
        """Run ``job`` after ``delay`` seconds unless ``key`` is scheduled again or cancelled
        before then (the later call wins: its job and its deadline)."""
        with self._cond:
            if self._closed:
                log.debug("%s is closed: %r not scheduled", self.name, key)
                return
            self._jobs[key] = _Job(time.monotonic() + max(0.0, delay), next(self._seq), job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, key: Hashable) -> bool:
        """Drop ``key``'s pending job; True when there was one (a job already running finishes)."""
        with self._cond:
            return self._jobs.pop(key, None) is not None

    def pending(self, key: Hashable | None = None) -> bool:
        """Whether ``key`` (any key, when None) has a job waiting or running."""
        with self._cond:
            if key is None:
                return bool(self._jobs) or self._running is not None
            return key in self._jobs

    def flush(self, key: Hashable | None = None, timeout: float | None = None) -> bool:
        """Run ``key``'s pending job (every pending job, when None) now and wait until it has
        run; False when ``timeout`` passed first. From inside a job it runs them in place."""
        if threading.current_thread() is self._thread:
            with self._cond:
                jobs = self._take(key)
            for job in sorted(jobs, key=lambda j: j.deadline):
                self._run(job)
            return True
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            keys = list(self._jobs) if key is None else [key] if key in self._jobs else []
            waiting = {self._jobs[k].seq for k in keys}
            if self._running is not None and key is None:
                waiting.add(self._running)
            for k in keys:
                self._jobs[k].deadline = 0.0
            self._cond.notify_all()
            while waiting & self._live_seqs():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if self._closed and self._thread is None:
                    return False
                self._cond.wait(left)
        return True

    def close(self, run_pending: bool = False, timeout: float = 5.0) -> None:
        """Stop the thread; the pending jobs are dropped, or run first with ``run_pending``."""
        if run_pending:
            self.flush(timeout=timeout)
        with self._cond:
            self._closed = True
            self._jobs.clear()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread -------------------------------------------------------------------------
    def _live_seqs(self) -> set[int]:
        """The jobs waiting or running (under the lock)."""
        live = {j.seq for j in self._jobs.values()}
        if self._running is not None:
            live.add(self._running)
        return live

    def _take(self, key: Hashable | None) -> list[_Job]:
        if key is None:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            return jobs
        job = self._jobs.pop(key, None)
        return [job] if job is not None else []

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        self._thread = None
                        self._cond.notify_all()
                        return
                    now = time.monotonic()
                    due = min(self._jobs.items(), key=lambda kv: kv[1].deadline, default=None)
                    if due is not None and due[1].deadline <= now:
                        key, job = due
                        del self._jobs[key]
                        self._running = job.seq
                        break
                    self._cond.wait(None if due is None else due[1].deadline - now)
            self._run(job)
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        try:
            job.run()
        except Exception:
            log.exception("a debounced job failed")
        self.runs += 1

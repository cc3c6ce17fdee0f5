"""The debounce scheduler: one thread, keyed deadlines, reschedule/cancel by key, flush, close."""

from __future__ import annotations

import threading

from slm_lsp.context.debounce import Debouncer


def test_a_burst_runs_once_with_the_last_job():
    d = Debouncer()
    ran: list[int] = []
    done = threading.Event()
    for i in range(50):
        d.schedule("buf", 0.05, lambda i=i: (ran.append(i), done.set()))
    assert done.wait(5)
    d.close()
    assert ran == [49]


def test_keys_are_independent_and_share_one_thread():
    d = Debouncer(name="slm-debounce-test")
    seen: list[tuple[str, str]] = []
    for key in ("a", "b", "c"):
        d.schedule(key, 0.01, lambda key=key: seen.append((key, threading.current_thread().name)))
    assert d.flush(timeout=5)
    d.close()
    assert sorted(k for k, _ in seen) == ["a", "b", "c"]
    assert {name for _, name in seen} == {"slm-debounce-test"}
    assert sum(t.name == "slm-debounce-test" for t in threading.enumerate()) == 0


def test_cancel_drops_the_pending_job():
    d = Debouncer()
    ran: list[str] = []
    d.schedule("k", 60, lambda: ran.append("k"))
    assert d.pending("k")
    assert d.cancel("k")
    assert not d.pending("k") and not d.cancel("k")
    d.schedule("other", 0, lambda: ran.append("other"))
    assert d.flush(timeout=5)
    d.close()
    assert ran == ["other"]


def test_flush_runs_a_far_deadline_now_and_waits_for_it():
    d = Debouncer()
    ran: list[str] = []
    d.schedule("far", 3600, lambda: ran.append("far"))
    d.schedule("other", 3600, lambda: ran.append("other"))
    assert d.flush("far", timeout=5)
    assert ran == ["far"] and d.pending("other")
    d.close()
    assert ran == ["far"]  # closing drops what is left


def test_close_can_run_what_is_pending_first_and_refuses_later_jobs():
    d = Debouncer()
    ran: list[str] = []
    d.schedule("k", 3600, lambda: ran.append("k"))
    d.close(run_pending=True)
    d.schedule("late", 0, lambda: ran.append("late"))
    assert ran == ["k"] and not d.pending()


def test_a_failing_job_costs_only_itself():
    d = Debouncer()
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    d.schedule("bad", 0, boom)
    d.schedule("good", 0.01, lambda: ran.append("good"))
    assert d.flush(timeout=5)
    d.close()
    assert ran == ["good"] and d.runs == 2


def test_a_job_may_flush_and_reschedule_without_deadlock():
    d = Debouncer()
    ran: list[str] = []
    d.schedule("inner", 3600, lambda: ran.append("inner"))

    def outer() -> None:
        d.flush()
        d.schedule("again", 0, lambda: ran.append("again"))

    d.schedule("outer", 0, outer)
    assert d.flush(timeout=5)
    assert d.flush(timeout=5)
    d.close()
    assert ran == ["inner", "again"]

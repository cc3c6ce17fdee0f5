"""slm_lsp.engine.cache: the type-through result cache."""

from __future__ import annotations

import sys
import threading

import pytest

from slm_lsp.engine.cache import KEEP, ResultCache

PREFIX = "import os\n\ndef main():\n    path = os."
SUFFIX = "\n\nmain()\n"
COMPLETION = "path.join(a, b)"


@pytest.fixture
def cache() -> ResultCache:
    c = ResultCache()
    c.put("doc", PREFIX, SUFFIX, COMPLETION)
    return c


def test_exact_repeat_hits(cache):
    assert cache.get("doc", PREFIX, SUFFIX) == COMPLETION
    assert (cache.hits, cache.misses) == (1, 0)


@pytest.mark.parametrize("n", range(1, len(COMPLETION)))
def test_typing_through_returns_the_rest(cache, n):
    assert cache.get("doc", PREFIX + COMPLETION[:n], SUFFIX) == COMPLETION[n:]


def test_typing_the_whole_completion_misses(cache):
    assert cache.get("doc", PREFIX + COMPLETION, SUFFIX) is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_diverging_text_misses(cache):
    assert cache.get("doc", PREFIX + "pathx", SUFFIX) is None
    assert cache.get("doc", PREFIX + "g", SUFFIX) is None
    assert cache.misses == 2


def test_changed_suffix_misses(cache):
    assert cache.get("doc", PREFIX, SUFFIX + "x") is None
    assert cache.get("doc", PREFIX, "\n\nmain(1)\n") is None  # same length, other text
    assert cache.get("doc", PREFIX + "pa", SUFFIX[1:]) is None


def test_edit_before_the_cursor_misses(cache):
    edited = PREFIX.replace("main", "mian")
    assert len(edited) == len(PREFIX)
    assert cache.get("doc", edited, SUFFIX) is None
    assert cache.get("doc", edited + "pa", SUFFIX) is None
    assert cache.get("doc", PREFIX[:-1], SUFFIX) is None  # backspace: shorter than the entry


def test_other_document_misses(cache):
    assert cache.get("other", PREFIX, SUFFIX) is None


def test_multiline_completion_type_through():
    c = ResultCache()
    completion = "x = 1\n    return x"
    c.put("doc", "def f():\n    ", "", completion)
    assert c.get("doc", "def f():\n    x = 1\n", "") == "    return x"
    assert c.get("doc", "def f():\n    x = 1\n    ret", "") == "urn x"


def test_empty_completion_is_not_stored():
    c = ResultCache()
    c.put("doc", PREFIX, SUFFIX, "")
    assert c.get("doc", PREFIX, SUFFIX) is None


def test_newest_entry_wins():
    c = ResultCache()
    c.put("doc", PREFIX, SUFFIX, "path.join(a)")
    c.put("doc", PREFIX, SUFFIX, "path.exists(a)")
    assert c.get("doc", PREFIX, SUFFIX) == "path.exists(a)"
    assert c.get("doc", PREFIX + "path.j", SUFFIX) == "oin(a)"  # the older entry still answers


def test_huge_documents_are_told_apart_by_their_ends():
    c = ResultCache()
    prefix = "# " + "x" * (3 * KEEP) + "\nvalue = "
    suffix = "\n" + "y" * (3 * KEEP)
    c.put("doc", prefix, suffix, "compute()")
    assert c.get("doc", prefix + "comp", suffix) == "ute()"
    entry = c._entries["doc"][0]
    assert len(entry.prefix_tail) == KEEP and len(entry.suffix_head) == KEEP  # bounded memory


def test_eviction_per_document():
    c = ResultCache(per_document=2)
    for i in range(3):
        c.put("doc", f"p{i} = ", SUFFIX, f"value{i}")
    assert c.get("doc", "p0 = ", SUFFIX) is None  # the oldest went
    assert c.get("doc", "p1 = ", SUFFIX) == "value1"
    assert c.get("doc", "p2 = ", SUFFIX) == "value2"


def test_eviction_of_least_recently_stored_documents():
    c = ResultCache(documents=2)
    c.put("a", PREFIX, SUFFIX, "from_a")
    c.put("b", PREFIX, SUFFIX, "from_b")
    c.put("a", PREFIX + "x", SUFFIX, "more_a")  # "a" is used again: "b" is now the oldest
    c.put("c", PREFIX, SUFFIX, "from_c")
    assert c.get("b", PREFIX, SUFFIX) is None
    assert c.get("a", PREFIX, SUFFIX) == "from_a"
    assert c.get("c", PREFIX, SUFFIX) == "from_c"


def test_forget(cache):
    cache.put("other", PREFIX, SUFFIX, "kept")
    cache.forget("doc")
    assert cache.get("doc", PREFIX, SUFFIX) is None
    assert cache.get("other", PREFIX, SUFFIX) == "kept"
    cache.forget("never-seen")  # no error


def test_counters():
    c = ResultCache()
    c.put("doc", PREFIX, SUFFIX, COMPLETION)
    c.get("doc", PREFIX, SUFFIX)
    c.get("doc", PREFIX + "p", SUFFIX)
    c.get("doc", PREFIX, "")
    assert (c.hits, c.misses) == (2, 1)


def test_put_get_and_forget_from_two_threads_never_fail():
    # The worker puts while the event loop gets and forgets (didClose): put used to find its
    # document's list gone between setdefault and move_to_end and raise KeyError, which the
    # worker's error path turned into an empty completion.
    cache = ResultCache(per_document=2, documents=4)
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            for i in range(30000):
                cache.put(f"doc{i % 3}", PREFIX, SUFFIX, COMPLETION)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            stop.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        while not stop.is_set():
            for key in ("doc0", "doc1", "doc2"):
                cache.get(key, PREFIX, SUFFIX)
                cache.forget(key)
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_an_empty_answer_is_kept_only_when_asked_and_answers_its_exact_place():
    cache = ResultCache()
    cache.put("a", "x = ", "\n", "")
    assert cache.get("a", "x = ", "\n") is None  # not kept by default
    cache.put("a", "x = ", "\n", "", empty=True)
    assert cache.get("a", "x = ", "\n") == ""
    assert cache.get("a", "x = 1", "\n") is None  # typed on: nothing known there
    cache.put("a", "x = ", "\n", "1 + 2")
    assert cache.get("a", "x = 1", "\n") == " + 2"

"""``slm-lsp bench index REPO``: the repo index on a large repository.

Prints: the full index time and the process's peak memory (ru_maxrss) from a cold cache, the
restart time from the saved index, the file watcher's start time and the directories it watches
(of all those in the tree: ignored ones get no watch), the whole-repository window index's build
time and memory,
the time to apply a single-file change (parse + publish a new snapshot), and p50/p95 context
assembly time per completion request at random positions in function bodies (all sources on,
the current file hidden as in the evaluation, stickiness off).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from ..context.index import ContextIndex
from ..context.provider import ContextOptions, ContextProvider
from ..context.watch import IndexWatcher
from . import percentile


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def run_index_bench(args: argparse.Namespace) -> int:
    repo = os.path.realpath(args.repo)
    cache = Path(tempfile.mkdtemp(prefix="slm-bench-index-"))
    base = _rss_mb()
    t0 = time.perf_counter()
    index = ContextIndex(repo, cache)
    index.build()
    full = time.perf_counter() - t0
    st = index.stats
    print(f"repo {repo}: {st['files']} files, {st['lines']} lines, {st['definitions']} definitions")
    print(f"full index (cold cache):     {full:7.2f} s  ({st['lines'] / max(full, 1e-9):,.0f} lines/s)")
    print(f"peak memory (ru_maxrss):     {_rss_mb():7.0f} MB  (before indexing {base:.0f} MB)")
    if index.save_error:
        print(f"saved index:                 none, kept in memory ({index.save_error})")
    else:
        size = index.cache_file.stat().st_size if index.cache_file and index.cache_file.exists() else 0
        print(f"saved index:                 {size / 1e6:7.1f} MB")
    t0 = time.perf_counter()
    again = ContextIndex(repo, cache)
    again.build()
    print(f"restart (saved index):       {time.perf_counter() - t0:7.2f} s  ({again.stats['parsed']} files parsed)")

    all_dirs, watched_dirs = _directories(index)
    watcher = IndexWatcher(index)
    t0 = time.perf_counter()
    watcher.start()
    print(f"file watcher start:          {time.perf_counter() - t0:7.2f} s  ({watcher.mode}; {watched_dirs:,} of "
          f"{all_dirs:,} directories watched, the others ignored)")
    watcher.stop()

    rng = random.Random(0)
    paths = sorted(index.snapshot.files, key=lambda p: -index.snapshot.files[p].lines)
    target = paths[len(paths) // 4]  # a big-ish file
    text = index.read_text(target)
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        index.update_buffer(target, text + f"\n\ndef added_for_bench_{i}():\n    pass\n")
        times.append((time.perf_counter() - t0) * 1000)
    print(f"single-file change:          p50 {percentile(times, 50):6.1f} ms  max {max(times):6.1f} ms  "
          f"({target}, {text.count(chr(10))} lines; parse + new snapshot)")
    index.close_buffer(target)

    provider = ContextProvider(ContextOptions(time_budget_ms=1000))
    provider.add_index(index)
    t0 = time.perf_counter()
    windows = provider.windows(index, wait=True)
    ws = windows.stats() if windows is not None else {}
    print(f"window index (all files):    {time.perf_counter() - t0:7.2f} s  ({ws.get('windows', 0):,} windows, "
          f"{ws.get('postings', 0):,} postings; built in the background by the server)")
    print(f"peak memory with it:         {_rss_mb():7.0f} MB")
    positions = []
    for entry in index.snapshot.files.values():
        for d in entry.definitions:
            if d.kind in ("function", "method") and d.end_line > d.line + 2:
                positions.append((entry.path, rng.randint(d.line + 1, d.end_line)))
    rng.shuffle(positions)
    ms: list[float] = []
    per_source: dict[str, list[float]] = {}
    for path, line in positions[: args.requests]:
        full_path = os.path.join(repo, path)
        doc = index.read_text(path)
        t0 = time.perf_counter()
        result = provider.gather(f"bench:{path}:{line}", full_path, doc, line, hide_current=True)
        ms.append((time.perf_counter() - t0) * 1000)
        for name, spent in result.timings_ms.items():
            per_source.setdefault(name, []).append(spent)
    provider.close()
    print(f"context assembly per request: p50 {percentile(ms, 50):6.1f} ms  p95 {percentile(ms, 95):6.1f} ms  "
          f"(n={len(ms)}, cold: no sticky reuse)")
    for name, spent_ms in sorted(per_source.items()):
        print(f"  {name:12s} p50 {percentile(spent_ms, 50):6.1f} ms  p95 {percentile(spent_ms, 95):6.1f} ms")
    print(f"peak memory at the end:      {_rss_mb():7.0f} MB")
    return 0


def _directories(index: ContextIndex) -> tuple[int, int]:
    """Directories in the tree (links not followed) and those the watcher watches."""
    total = watched = 0
    for dirpath, _dirnames, _files in os.walk(index.root):
        total += 1
        rel = os.path.relpath(dirpath, index.root).replace(os.sep, "/")
        watched += rel == "." or not index.rules.ignored(rel, is_dir=True)
    return total, watched

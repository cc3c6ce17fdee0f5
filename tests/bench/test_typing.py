"""``slm-lsp bench typing``: the per-cause table and the session mode, run as a user runs them,
with the tiny generated model (numbers are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slm_lsp.bench.typing import SessionDoc, cause_table, session_script, typing_script
from tests.conftest import TINY_MODEL

SOURCE = "".join(f"def f{i}(x):\n    y = x * {i}\n    return y + {i}\n\n" for i in range(12))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", "bench", "typing", *args, "--model", str(TINY_MODEL),
                           "--threads", "1", "--ctx", "2048"], capture_output=True, text=True, timeout=300)


def test_a_session_types_in_each_file_switching_and_jumping(tmp_path: Path):
    paths = []
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(SOURCE)
        paths.append(str(tmp_path / name))
    docs, stretches = session_script(paths, 2)
    assert [(s.doc, s.kind) for s in stretches] == [(0, "open"), (1, "open"), (1, "jump"), (0, "switch"), (2, "open"),
                                                    (1, "switch"), (0, "switch"), (2, "switch"), (2, "jump")]
    for doc in docs:  # a document with every region typed back is the file again
        doc.typed = [doc.typed_length(i) for i in range(len(doc.regions))]
        assert doc.text(0)[0] == SOURCE
    # The user opened a line for "b" (Enter, Vim's o) on coming to the place, and typed it: the
    # next line stays its own. A region not typed yet, away from the cursor, has no line yet.
    doc = SessionDoc("x", ["a\n", "bb\n", "c\n"], [(1, 2)], [0])
    assert doc.typed_length(0) == 2 and doc.text(0) == ("a\n\nc\n", 2)
    assert doc.text(-1)[0] == "a\nc\n" and doc.text(0, line_open=False) == ("a\nc\n", 2)
    doc.typed = [1]
    assert doc.text(0) == ("a\nb\nc\n", 3)
    doc.typed = [2]
    assert doc.text(0) == ("a\nbb\nc\n", 4)
    # --open-line off: the next line follows what was typed on the cursor's line.
    glued = SessionDoc("x", ["a\n", "bb\n", "c\n"], [(1, 2)], [1], open_line=False)
    assert glued.typed_length(0) == 3 and glued.text(0) == ("a\nbc\n", 3)


def test_typing_script_types_into_an_opened_line():
    text = "x = 1\ny = 2\nz = 3\n"
    before, region, after, pauses = typing_script(text, 1, 1, 2)
    assert (before, region, after, pauses) == ("x = 1\n", "y = 2", "\nz = 3\n", [2, 4])
    assert before + region[:2] + after == "x = 1\ny \nz = 3\n"  # the cursor's line holds only what was typed
    assert before + region + after == text
    before, region, after, pauses = typing_script(text, 1, 1, 2, open_line=False)
    assert (region, after, pauses) == ("y = 2\n", "z = 3\n", [2, 4, 6])


def test_cause_table_counts_each_cause_in_order():
    lines = cause_table([("typing", 10.0), ("open", 900.0), ("typing", 30.0), ("cache", 1.0)])
    assert [line.split()[:2] for line in lines[1:]] == [["open", "1"], ["typing", "2"], ["cache", "1"]]


def test_bench_typing_session_prints_the_tail_and_plots_it(tmp_path: Path):
    pytest.importorskip("matplotlib")
    paths = []
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(SOURCE)
        paths.append(str(tmp_path / name))
    out = run(*paths, "--session", "--lines", "1", "--every", "12", "--cps", "1000", "--think-ms", "0",
              "--open-line", "off", "--plot", str(tmp_path / "session.png"))
    assert out.returncode == 0, out.stderr
    assert "open line off" in out.stdout, out.stdout
    for expected in ("latency, all requests:", "type-through cache:", "first suggestion after open:",
                     "prompt tokens evaluated per typing request:", "KV states kept:", "latency by cause:",
                     "  open "):
        assert expected in out.stdout, out.stdout
    assert (tmp_path / "session.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("cursor", ["on", "off"])
def test_bench_typing_session_with_and_without_the_cursor_warmup(tmp_path: Path, cursor: str):
    paths = []
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(SOURCE)
        paths.append(str(tmp_path / name))
    out = run(*paths, "--session", "--lines", "1", "--every", "12", "--cps", "1000", "--think-ms", "50",
              "--cursor", cursor)
    assert out.returncode == 0, out.stderr
    assert f"warmup on, cursor {cursor}, open line on, KV states" in out.stdout, out.stdout
    done, stopped = (int(x) for x in out.stdout.split("warmups ", 1)[1].split(" by a request")[0]
                     .replace(" done,", "").replace(" stopped", "").split())
    assert done + stopped >= 1  # the warmups ran (the tiny model evaluates a prompt in milliseconds)


def test_bench_typing_prints_latency_by_cause(tmp_path: Path):
    (tmp_path / "a.py").write_text(SOURCE)
    out = run(str(tmp_path / "a.py"), "--lines", "2", "--every", "4", "--baseline-samples", "0")
    assert out.returncode == 0, out.stderr
    assert "latency by cause:" in out.stdout and "  open " in out.stdout and "  typing " in out.stdout, out.stdout

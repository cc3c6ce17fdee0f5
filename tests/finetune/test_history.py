"""The git-history miner on a repository the test builds with real ``git commit``s."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from finetune.history import (
    REGION_LINES,
    Commit,
    FileChange,
    Hunk,
    commit_steps,
    hunk_diff,
    mine,
    parse_log,
    region_bounds,
    split_history,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commit(repo: Path, files: dict[str, str | bytes | None], message: str) -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def new_repo(repo: Path) -> Path:
    """An empty git repository at ``repo`` (made), committing as a test user, unsigned."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "commit.gpgsign", "false")
    return repo


def numbered(n: int, fmt: str = "x{i} = {i}\n") -> str:
    return "".join(fmt.format(i=i) for i in range(n))


APP = ("def tally(items):\n"
       "    total = 0\n"
       "    for item in items:\n"
       "        total += item\n"
       "    return total\n"
       "\n"
       + numbered(60))
UTIL = "def helper(a):\n    return a + 1\n\n\ndef other(b):\n    return b * 2\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path / "proj")


@pytest.fixture
def history(repo: Path) -> tuple[Path, dict[str, str]]:
    shas: dict[str, str] = {}
    shas["create"] = commit(repo, {"app.py": APP, "util.py": UTIL, "README.md": "# proj\n",
                                   "node_modules/lib/index.js": "module.exports = 1;\n",
                                   "api_pb2.py": "X = 1\nY = 2\n"}, "create")
    # A rename continued on the next lines (3 hunks), then an edit far below, then another file.
    app2 = APP.replace("total", "count").replace("x50 = 50\n", "x50 = 500\n")
    util2 = UTIL.replace("return a + 1", "return a + 2")
    shas["rename"] = commit(repo, {"app.py": app2, "util.py": util2}, "rename total")
    shas["docs"] = commit(repo, {"README.md": "# proj\n\nmore\n"}, "docs only")
    shas["skipped"] = commit(repo, {"node_modules/lib/index.js": "module.exports = 2;\n",
                                    "api_pb2.py": "X = 1\nY = 3\n", "logo.png": b"\x89PNG\0\0\x01"}, "vendored")
    shas["delete-lines"] = commit(repo, {"util.py": UTIL.replace("return a + 1", "return a + 2")
                                         .replace("\n\ndef other(b):\n    return b * 2\n", "\n")}, "drop other")
    return repo, shas


def test_mine_keeps_code_edits_in_order_and_every_commit(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    commits = mine(repo)
    assert [c.sha for c in commits] == [shas[k] for k in ("create", "rename", "docs", "skipped", "delete-lines")]
    by = {c.sha: c for c in commits}
    # Created files are not edits; docs, vendored, generated and binary files are not code edits.
    assert by[shas["create"]].files == []
    assert by[shas["docs"]].files == []
    assert by[shas["skipped"]].files == []
    rename = by[shas["rename"]]
    assert rename.subject == "rename total"
    assert [f.path for f in rename.files] == ["app.py", "util.py"]
    app = rename.files[0]
    assert app.before == APP
    # -U0: the changed lines 2, 4 and 5 become two hunks (2; 4-5), then the far one at x50.
    assert [(h.old_start, len(h.old), len(h.new)) for h in app.hunks] == [(1, 1, 1), (3, 2, 2), (56, 1, 1)]
    assert app.hunks[0].old == ["    total = 0\n"] and app.hunks[0].new == ["    count = 0\n"]
    assert rename.files[1].hunks[0].new == ["    return a + 2\n"]


def test_replaying_the_hunks_gives_the_commit_s_files(history: tuple[Path, dict[str, str]]) -> None:
    """Every hunk lands where git put it: applied in order they rebuild each file exactly."""
    repo, _ = history
    for c in mine(repo):
        for f in c.files:
            lines = f.before.splitlines(keepends=True)
            shift = 0
            for h in f.hunks:
                at = h.old_start + shift
                assert lines[at:at + len(h.old)] == h.old
                lines[at:at + len(h.old)] = h.new
                shift += h.delta
            assert "".join(lines) == git(repo, "show", f"{c.sha}:{f.path}")


def test_steps_of_a_rename_predict_the_next_line_then_nothing(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    rename = next(c for c in mine(repo) if c.sha == shas["rename"])
    steps = list(commit_steps(rename))
    assert [s.kind for s in steps] == ["next", "far", "other-file", "last"]
    first = steps[0]
    # After "total = 0" became "count = 0": the cursor at that line's end, the loop below still
    # says total, and the expected answer renames it there (only the next hunk).
    assert first.path == "app.py" and first.region_start == 0
    assert first.region[:first.cursor].endswith("    count = 0")
    assert first.region[first.cursor] == "\n"
    assert "total += item" in first.region
    assert first.target is not None
    assert first.target == first.region.replace("total += item", "count += item").replace("return total",
                                                                                          "return count")
    # The diff as the server's edit history writes it: one unchanged line around the change.
    assert first.edits == ["--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,3 @@\n def tally(items):\n-    total = 0\n"
                           "+    count = 0\n     for item in items:\n"]
    assert (first.line, first.column) == (1, len("    count = 0"))
    assert first.text.splitlines(keepends=True)[1] == "    count = 0\n" and "total += item" in first.text
    assert len(first.region.splitlines()) == REGION_LINES
    # The next hunk (x50) is 50 lines below the loop: outside the region, so no edit there.
    assert steps[1].target is None and "x50" not in steps[1].region
    assert len(steps[1].edits) == 2
    # The last hunk of the commit: nothing follows.
    assert steps[3].path == "util.py" and steps[3].target is None and len(steps[3].edits) == 3  # MAX_HISTORY


def test_a_deletion_puts_the_cursor_where_the_lines_were(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    drop = next(c for c in mine(repo) if c.sha == shas["delete-lines"])
    steps = list(commit_steps(drop))
    assert [s.kind for s in steps] == ["last"]
    assert "-def other(b):\n" in steps[0].edits[0] and "+" not in steps[0].edits[0].split("@@")[-1]


def test_split_holds_out_the_most_recent_commits() -> None:
    commits = [Commit(str(i), i, f"c{i}") for i in range(10)]
    older, recent = split_history(commits, 3)
    assert [c.sha for c in older] == [str(i) for i in range(7)]
    assert [c.sha for c in recent] == ["7", "8", "9"]
    assert split_history(commits, 0) == (commits, [])


def test_region_bounds_stay_in_the_file() -> None:
    assert region_bounds(100, 50, 20, 8) == (42, 62)
    assert region_bounds(100, 2, 20, 8) == (0, 20)
    assert region_bounds(100, 99, 20, 8) == (80, 100)
    assert region_bounds(5, 3, 20, 8) == (0, 5)


def test_hunk_diff_numbers_lines_as_in_the_files() -> None:
    before = ["a\n", "b\n", "c\n", "d\n"]
    insert = Hunk("a.py", 1, [], ["x\n"])
    assert hunk_diff(insert, 1, before, ["a\n", "x\n", "b\n", "c\n", "d\n"]) == (
        "--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,3 @@\n a\n+x\n b\n")
    delete = Hunk("a.py", 1, ["b\n", "c\n"], [])
    assert hunk_diff(delete, 1, before, ["a\n", "d\n"]) == "--- a/a.py\n+++ b/a.py\n@@ -1,4 +1,2 @@\n a\n-b\n-c\n d\n"
    lower = Hunk("a.py", 3, ["d\n"], ["D\n"])
    assert hunk_diff(lower, 3, before, ["a\n", "b\n", "c\n", "D\n"]) == (
        "--- a/a.py\n+++ b/a.py\n@@ -3,2 +3,2 @@\n c\n-d\n+D\n")


def test_parse_log_marks_files_that_are_not_text_edits() -> None:
    log = ("\0abc 100 subject here\n\n"
           "diff --git a/n.py b/n.py\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+x\n"
           "diff --git a/m.py b/m.py\nindex 1..2 100644\n--- a/m.py\n+++ b/m.py\n@@ -3,0 +4,2 @@\n+a\n+b\n"
           "@@ -9 +10,0 @@\n--- not a header\n"
           "diff --git a/e.py b/e.py\nindex 1..2 100644\n--- a/e.py\n+++ b/e.py\n@@ -1 +1 @@\n-a\n"
           "\\ No newline at end of file\n+b\n\\ No newline at end of file\n")
    [(sha, when, subject, files)] = parse_log(log)
    assert (sha, when, subject) == ("abc", 100, "subject here")
    assert [(p, s) for p, s, _ in files] == [("n.py", "A"), ("m.py", "M"), ("e.py", "X")]
    hunks = files[1][2]
    assert [(h.old_start, h.old, h.new) for h in hunks] == [(3, [], ["a\n", "b\n"]), (8, ["-- not a header\n"], [])]


def test_commits_with_too_many_hunks_give_no_steps() -> None:
    before = numbered(200)
    hunks = [Hunk("a.py", i * 4, [f"x{i * 4} = {i * 4}\n"], ["changed\n"]) for i in range(45)]
    c = Commit("s", 0, "mass", [FileChange("a.py", before, hunks)])
    assert list(commit_steps(c)) == []
    c.files[0].hunks = hunks[:3]
    assert [s.kind for s in commit_steps(c)] == ["next", "next", "last"]

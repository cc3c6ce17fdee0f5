"""A repository's git history as next-edit steps: what was edited, in order, and what came next.

* ``mine``: every non-merge commit, oldest first (``git log --reverse --no-merges -p -U0``),
  split into hunks per file in the order git prints them (files by path, hunks top to bottom:
  the order of a commit's edits is not recorded, and top to bottom is how one usually works
  through a file). Only code files the server would index are read (``name_skip_reason``: not
  code, vendored, generated names), and a file whose old version is huge, binary, generated or
  minified (``content_skip_reason``), or that the commit creates, deletes or renames, is left out
  with its hunks: creating a file is not an edit of a region.
* ``split_history``: the most recent ``heldout`` commits are the evaluation's
  (``slm-lsp eval --task next-edit``); finetuning sees only the older ones. Both sides call it,
  so they always agree on the cut.
* ``steps``: a commit replayed hunk by hunk. After hunk ``k`` (the user just made it, in file F)
  the cursor sits at its end and the editable region is the ``REGION_LINES`` lines around it in
  F as it is then (the earlier hunks applied). The expected answer is hunk ``k + 1`` applied to
  the region when that hunk is in F and inside the region, else nothing ("no edit": the commit
  ended, or its next edit is in another file or far away). The edit history is the commit's
  earlier hunks, as small unified diffs, oldest first.

Training adds two kinds (``finetune.next_edit``): the region around a next hunk that the
cursor is not near ("jump": the user went there), and regions of touched files away from any
change ("away": nothing to do).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slm_lsp.context.edit_history import CONTEXT_LINES
from slm_lsp.context.edit_history import hunk_diff as server_hunk_diff
from slm_lsp.context.files import OTHER_CODE_EXTENSIONS, content_skip_reason, name_skip_reason
from slm_lsp.context.parsing import EXTENSIONS

REGION_LINES = 20
"""Lines in the editable region (the contract asks for about 20-30; fewer keep a CPU fast: the
answer rewrites the whole region)."""
REGION_ABOVE = REGION_LINES // 3
"""Lines of the region above the cursor line: a third, as the server's (next edits are more often below)."""
MAX_HUNK_LINES = 10
"""Hunks that remove or add more lines than this are left out as steps' targets (a region of 20
lines cannot hold them); they still count as edit history."""
MAX_HISTORY = 3
"""Most recent edits in an input (older ones of the commit are dropped: a CPU pays for every
prompt token, and the nearest edits say the most)."""
MAX_HISTORY_DIFF_LINES = 24
"""A hunk whose diff would be longer than this is not shown as history (a new function written
out says little about the next small edit, and costs hundreds of prompt tokens); the server's
ring drops diffs over ``context.edit_history.MAX_DIFF_LINES``."""
MAX_COMMIT_HUNKS = 40
"""Commits with more code hunks than this (mass renames, reformatting) give no steps."""
MAX_FILE_BYTES = 200_000
HELDOUT_COMMITS = 20
"""The most recent commits held out for ``slm-lsp eval --task next-edit`` (never trained on)."""

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Hunk:
    path: str
    old_start: int
    """0-based index of the first removed line in the file before the commit; for a pure
    insertion, the index the new lines go to."""
    old: list[str]
    """Removed lines, each with its ``\\n``."""
    new: list[str]
    """Added lines, each with its ``\\n``."""

    @property
    def delta(self) -> int:
        return len(self.new) - len(self.old)


@dataclass
class FileChange:
    path: str
    before: str
    """The file at the commit's parent."""
    hunks: list[Hunk]


@dataclass
class Commit:
    sha: str
    time: int
    """Committer time (Unix seconds)."""
    subject: str
    files: list[FileChange] = field(default_factory=list)

    @property
    def hunks(self) -> list[Hunk]:
        return [h for f in self.files for h in f.hunks]


@dataclass
class Step:
    """One next-edit question: after the edits in ``edits``, what does ``region`` become?"""

    commit: str
    path: str
    index: int
    """Which hunk of the commit was just made (0: the first)."""
    edits: list[str]
    """The commit's hunks so far as small unified diffs, oldest first (the last ``MAX_HISTORY``)."""
    region: str
    cursor: int
    """Character offset of the cursor in ``region``."""
    region_start: int
    """The region's first line in the file (0-based)."""
    target: str | None
    """The region after the next edit; None: no edit expected."""
    kind: str
    """``next`` (the next hunk is in the region), ``last`` (the commit ends), ``other-file``,
    ``far`` (the next hunk is outside the region), ``jump`` or ``away`` (training only)."""
    text: str = ""
    """The whole file as it is at the step (what the server's document holds)."""
    line: int = 0
    column: int = 0
    """The cursor in ``text`` (0-based line, string index in it)."""


# -- mining -------------------------------------------------------------------------------------
def code_pathspecs() -> list[str]:
    """Git pathspecs of the code files the server indexes (binary files are never diffed)."""
    exts = sorted(set(EXTENSIONS) | set(OTHER_CODE_EXTENSIONS))
    return [f":(glob,icase)**/*{ext}" for ext in exts]


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=data, check=True, capture_output=True,
                          timeout=600).stdout


def parse_log(text: str) -> list[tuple[str, int, str, list[tuple[str, str, list[Hunk]]]]]:
    """``git log -p -U0`` output (commits introduced by ``\\x00SHA TIME SUBJECT`` lines) as
    (sha, time, subject, [(path, status, hunks)]); status is ``M`` (modified), ``A``, ``D``,
    ``R`` or ``X`` (something that is not a text edit: binary, mode only, no newline at the end)."""
    commits: list[tuple[str, int, str, list[tuple[str, str, list[Hunk]]]]] = []
    files: list[tuple[str, str, list[Hunk]]] = []
    hunk: Hunk | None = None
    status = "M"
    path = ""
    for line in text.split("\n"):
        if line.startswith("\0"):
            sha, when, subject = (line[1:].split(" ", 2) + ["", ""])[:3]
            files = []
            commits.append((sha, int(when or 0), subject, files))
            hunk = None
            continue
        if line.startswith("diff --git "):
            path, status, hunk = "", "M", None
            m = re.match(r"diff --git a/(.*) b/(.*)$", line)
            if m:
                path = m.group(2)
            files.append((path, status, []))
            continue
        if not files:
            continue
        if hunk is None:
            if line.startswith("new file"):
                status = "A"
            elif line.startswith("deleted file"):
                status = "D"
            elif line.startswith(("rename from", "copy from", "similarity index")):
                status = "R"
            elif line.startswith("Binary files"):
                status = "X"
            elif line.startswith("+++ b/"):
                path = line[6:]
            files[-1] = (path, status, files[-1][2])
        m = _HUNK.match(line)
        if m:
            a, b, _c, _d = m.groups()
            old_n = 1 if b is None else int(b)
            start = int(a) - 1 if old_n else int(a)
            hunk = Hunk(path, start, [], [])
            files[-1][2].append(hunk)
            continue
        if hunk is None:
            continue
        if line.startswith("-"):
            hunk.old.append(line[1:] + "\n")
        elif line.startswith("+"):
            hunk.new.append(line[1:] + "\n")
        elif line.startswith("\\"):
            files[-1] = (files[-1][0], "X", files[-1][2])  # no newline at the end: lines would not rejoin
    return commits


def read_blobs(repo: Path, specs: list[str]) -> list[bytes | None]:
    """The contents of ``rev:path`` specs (None where missing), through one ``git cat-file --batch``."""
    if not specs:
        return []
    out = _git(repo, "cat-file", "--batch", data=("\n".join(specs) + "\n").encode())
    blobs: list[bytes | None] = []
    pos = 0
    for _ in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) < 3 or header[1] == b"missing":
            blobs.append(None)
            continue
        size = int(header[2])
        blobs.append(out[pos:pos + size])
        pos += size + 1
    return blobs


def mine(repo: Path, *, max_file_bytes: int = MAX_FILE_BYTES) -> list[Commit]:
    """Every non-merge commit of ``repo``'s current branch, oldest first, with its edits of code
    files (files the server would not index, and files created, deleted, renamed or binary, are
    left out). A commit that touched no such file is kept with no files (the split counts it)."""
    repo = Path(repo)
    log = _git(repo, "log", "--reverse", "--no-merges", "--first-parent", "-p", "-U0", "--no-color",
               "--no-ext-diff", "--no-renames", "--format=%x00%H %ct %s", "--", *code_pathspecs())
    # Commits that touch no code file are missing from a path-limited log: list them all.
    order = _git(repo, "rev-list", "--reverse", "--no-merges", "--first-parent", "--format=%H %ct %s", "HEAD")
    everyone: list[tuple[str, int, str]] = []
    for line in order.decode("utf-8", "replace").splitlines():
        if line.startswith("commit "):
            continue
        sha, when, subject = (line.split(" ", 2) + ["", ""])[:3]
        everyone.append((sha, int(when or 0), subject))
    parsed = {sha: files for sha, _t, _s, files in parse_log(log.decode("utf-8", "replace"))}
    wanted: list[tuple[str, str, list[Hunk]]] = []
    for sha, _t, _s in everyone:
        for path, status, hunks in parsed.get(sha, []):
            if status == "M" and hunks and name_skip_reason(path) is None:
                wanted.append((sha, path, hunks))
    befores = read_blobs(repo, [f"{sha}^:{path}" for sha, path, _h in wanted])
    changes: dict[str, list[FileChange]] = {}
    for (sha, path, hunks), data in zip(wanted, befores):
        if data is None or content_skip_reason(data, len(data), max_file_bytes) is not None or b"\r" in data:
            continue
        try:
            before = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if _applies(before, hunks):
            changes.setdefault(sha, []).append(FileChange(path, before, hunks))
    return [Commit(sha, when, subject, changes.get(sha, [])) for sha, when, subject in everyone]


def _applies(before: str, hunks: list[Hunk]) -> bool:
    """Whether ``hunks`` remove exactly lines that ``before`` has (a check of the parsing)."""
    lines = before.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        return False
    return all(lines[h.old_start:h.old_start + len(h.old)] == h.old for h in hunks)


def split_history(commits: list[Commit], heldout: int = HELDOUT_COMMITS) -> tuple[list[Commit], list[Commit]]:
    """(older, recent): the last ``heldout`` commits (in history order) are the evaluation's,
    never trained on. The one place that decides the cut, for finetuning and evaluation alike."""
    if heldout <= 0:
        return list(commits), []
    return list(commits[:-heldout]), list(commits[-heldout:])


# -- steps --------------------------------------------------------------------------------------
def hunk_diff(h: Hunk, at: int, before: list[str], after: list[str]) -> str:
    """``h`` as the small unified diff the server's edit history shows (``context.edit_history``:
    one unchanged line around the change, numbered as in the files); it went to line ``at``
    (0-based) of ``before`` (the file before it), which made ``after``."""
    return server_hunk_diff(h.path, before, after, (at, at + len(h.old), at + len(h.new)), CONTEXT_LINES)


def region_bounds(n_lines: int, line: int, size: int = REGION_LINES, above: int = REGION_ABOVE) -> tuple[int, int]:
    """The ``[start, end)`` lines of the region around ``line`` in a file of ``n_lines`` lines:
    ``above`` lines above it, the rest below, moved to stay inside the file."""
    start = max(0, line - above)
    end = min(n_lines, start + size)
    start = max(0, end - size)
    return start, end


def _offset(lines: list[str], start: int, line: int, column: int) -> int:
    return sum(len(x) for x in lines[start:line]) + column


class Replay:
    """A commit's files as they are after each hunk, with each hunk's place at the time."""

    def __init__(self, commit: Commit) -> None:
        self.hunks = commit.hunks
        self.state = {f.path: f.before.splitlines(keepends=True) for f in commit.files}
        self.shift: dict[str, int] = {f.path: 0 for f in commit.files}
        self.applied = 0

    def position(self, h: Hunk) -> int:
        """Where ``h`` starts in its file now (hunks of a file come top to bottom)."""
        return h.old_start + self.shift[h.path]

    def apply_next(self) -> tuple[Hunk, int, str]:
        """Apply the next hunk: (the hunk, where it went, its diff as the server's history shows it,
        empty when it is too long to show: ``MAX_HISTORY_DIFF_LINES``)."""
        h = self.hunks[self.applied]
        at = self.position(h)
        lines = self.state[h.path]
        before = list(lines)
        lines[at:at + len(h.old)] = h.new
        self.shift[h.path] += h.delta
        self.applied += 1
        diff = hunk_diff(h, at, before, lines) if len(h.old) + len(h.new) <= MAX_HISTORY_DIFF_LINES else ""
        return h, at, diff


def fits_region(h: Hunk) -> bool:
    return len(h.old) <= MAX_HUNK_LINES and len(h.new) <= MAX_HUNK_LINES


def commit_steps(commit: Commit, *, max_history: int = MAX_HISTORY, size: int = REGION_LINES,
                 above: int = REGION_ABOVE) -> Iterator[Step]:
    """The commit replayed hunk by hunk: after each hunk, the question of the next edit."""
    hunks = commit.hunks
    if not hunks or len(hunks) > MAX_COMMIT_HUNKS:
        return
    replay = Replay(commit)
    diffs: list[str] = []
    for k in range(len(hunks)):
        h, at, diff = replay.apply_next()
        if diff:
            diffs.append(diff)
        lines = replay.state[h.path]
        if not lines:
            continue
        # The cursor: the end of the last line the hunk wrote, or where the removed lines were.
        if h.new:
            line = at + len(h.new) - 1
            column = len(lines[line].rstrip("\n"))
        else:
            line, column = min(at, len(lines) - 1), 0
        r0, r1 = region_bounds(len(lines), line, size, above)
        region = "".join(lines[r0:r1])
        cursor = _offset(lines, r0, line, column)
        target: str | None = None
        if k + 1 >= len(hunks):
            kind = "last"
        elif hunks[k + 1].path != h.path:
            kind = "other-file"
        else:
            nxt = hunks[k + 1]
            pos = replay.position(nxt)
            inside = r0 <= pos and pos + len(nxt.old) <= r1 and (nxt.old or pos < r1)
            if inside and fits_region(nxt):
                new_lines = list(lines[r0:r1])
                new_lines[pos - r0:pos - r0 + len(nxt.old)] = nxt.new
                target, kind = "".join(new_lines), "next"
            else:
                kind = "far"
        if target == region:
            target, kind = None, "far"  # a hunk that changes nothing visible (whitespace-only git quirks)
        yield Step(commit.sha, h.path, k, diffs[-max_history:], region, cursor, r0, target, kind,
                   "".join(lines), line, column)


def history_steps(commits: list[Commit], **kwargs: int) -> list[Step]:
    """``commit_steps`` of every commit, in history order."""
    return [s for c in commits for s in commit_steps(c, **kwargs)]

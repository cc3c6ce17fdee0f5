"""``slm-lsp bench typing``: replay typing part of a real file, a completion request at each pause.

The region (``--lines`` lines from ``--start-line``) is removed and typed back character by
character, the way an editor user writes new lines: the line is opened first (Enter, or Vim's
``o``), so the text after the cursor starts on the next line (``--open-line off``: the rest of
the file follows the typed text on the cursor's line, as this benchmark typed before
2026-12-01, which costs every request that line's tokens again and shows the model a line that
no one writes); every ``--every`` characters the editor pauses and asks for a completion, through
the same engine the server uses (prompt windows, KV reuse, type-through cache). In the same run,
a sample of those requests is replayed through plain llama-cpp-python (``Llama``, cache reset
before each: no reuse) with the same prompt tokens, for the latency ratio, and its greedy output
is compared with ours to show what the KV shift costs in fidelity.

Every request's cause (``engine.warmup.classify``: open, switch, jump, context, window, refresh,
typing, cache) is tallied, with p50/p95 latency per cause.

``--session`` replays a working session instead (``session_script``): typing in several files,
opening each, switching between them and jumping within them, at a human pace (``--cps``
characters a second, ``--think-ms`` before typing at a new place), with the server's warmup
hooks: a warmup on open, where the cursor comes to rest at a new place (the editors' ``slm/cursor``,
before the pause; ``--cursor off`` leaves it out, as before the editors sent it) and at the first
edit of a new place. It prints p50/p95/max, the share
answered from the type-through cache, the first suggestion after opening a file, and the causes;
``--plot OUT.png`` draws each request's latency over the session coloured by cause (matplotlib,
the ``bench`` extra). ``--warmup off`` runs the same session without warmups or saved KV states.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import merge_config
from . import percentile, summary

if TYPE_CHECKING:
    from ..engine.service import CompletionRequest
# The engine is imported when a benchmark runs: the CLI reads these arguments at every start.


def add_arguments(b: argparse.ArgumentParser) -> None:
    """``slm-lsp bench typing``'s arguments (besides the model's)."""
    b.add_argument("file", nargs="+", help="the file to retype (--session: the files of the session, 2 or more)")
    b.add_argument("--every", type=int, default=6, help="characters typed between requests")
    b.add_argument("--lines", type=int, default=None,
                   help="lines of the file to retype (default 20; --session: lines per stretch of typing, default 3)")
    b.add_argument("--start-line", type=int, default=0, help="first line to retype (0: the middle of the file)")
    b.add_argument("--baseline-samples", type=int, default=8, help="requests re-run without reuse for the ratio")
    b.add_argument("--context", metavar="REPO",
                   help="index REPO (which holds FILE) and put repo context in every prompt, as the server does")
    b.add_argument("--session", action="store_true",
                   help="a working session: type in the files, switching between them and jumping within them")
    b.add_argument("--cps", type=float, default=6.0, help="--session: typing speed, characters per second")
    b.add_argument("--think-ms", type=int, default=2000,
                   help="--session: pause before typing at a new place (after opening, switching or jumping)")
    b.add_argument("--warmup", choices=["on", "off"], default="on",
                   help="completion.warmup and the kept KV states (off: completion.kv_states_mb 0)")
    b.add_argument("--kv-states-mb", type=int, help="completion.kv_states_mb")
    b.add_argument("--cursor", choices=["on", "off"], default="on",
                   help="--session: the editor says where the cursor comes to rest (slm/cursor), so a new place "
                        "is warmed during the pause before typing (off: only at the first edit there)")
    b.add_argument("--plot", metavar="OUT.png", help="--session: draw each request's latency over the session")
    b.add_argument("--open-line", choices=["on", "off"], default="on",
                   help="on: each line is typed into a line of its own, opened first (Enter, Vim's o), as editor "
                        "users write; off: the file's next line follows the typed text on the cursor's line (the "
                        "benchmark before 2026-12-01)")
    b.add_argument("-v", "--verbose", action="store_true")


def cause_table(rows: list[tuple[str, float]]) -> list[str]:
    """Lines of a per-cause table: (cause, latency ms) rows -> count, p50, p95, max."""
    from ..engine.warmup import CAUSES

    by: dict[str, list[float]] = defaultdict(list)
    for cause, ms in rows:
        by[cause or "-"].append(ms)
    out = [f"  {'cause':8s} {'n':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}"]
    for cause in [c for c in CAUSES if c in by] + sorted(set(by) - set(CAUSES)):
        v = by[cause]
        out.append(f"  {cause:8s} {len(v):4d} {percentile(v, 50):8.0f} {percentile(v, 95):8.0f} {max(v):8.0f}")
    return out


def typing_script(text: str, start_line: int, n_lines: int, every: int,
                  open_line: bool = True) -> tuple[str, str, str, list[int]]:
    """(before, region, after, pause offsets into region) for retyping ``region``: the document
    at a pause is ``before + region[:offset] + after``. With ``open_line`` the region's last line
    break belongs to ``after``: the user opened the line before typing into it, so the text after
    the cursor always starts on the next line."""
    lines = text.splitlines(keepends=True)
    if not start_line:
        start_line = max(0, len(lines) // 2 - n_lines // 2)
    before = "".join(lines[:start_line])
    region = "".join(lines[start_line:start_line + n_lines])
    after = "".join(lines[start_line + n_lines:])
    if open_line and region.endswith("\n"):
        region, after = region[:-1], "\n" + after
    pauses = list(range(every, len(region) + 1, every))
    return before, region, after, pauses


def _context_provider(repo: str):  # -> ContextProvider
    from ..context.index import ContextIndex
    from ..context.provider import ContextProvider

    t0 = time.perf_counter()
    index = ContextIndex(os.path.realpath(repo), Path(tempfile.mkdtemp(prefix="slm-bench-")))
    index.build()
    print(f"repo {repo}: {index.stats['files']} files indexed in {time.perf_counter() - t0:.1f} s")
    provider = ContextProvider()
    provider.add_index(index)
    provider.windows(index, wait=True)  # as the server has it once its background build is done
    return provider


def _settings(args: argparse.Namespace) -> dict:
    from .. import cli

    settings = cli.cli_settings(args)
    completion = settings.setdefault("completion", {})
    if getattr(args, "warmup", "on") == "off":
        completion.update(warmup=False, kv_states_mb=0)
    if getattr(args, "kv_states_mb", None) is not None:
        completion["kv_states_mb"] = args.kv_states_mb
    return settings


def run_typing_bench(args: argparse.Namespace) -> int:
    if isinstance(args.file, str):
        args.file = [args.file]
    if args.session:
        return run_session_bench(args)
    from ..engine.service import CompletionEngine, CompletionRequest
    from ..models import resolve_model
    from .speculative import SpeculationComparison

    config = merge_config(_settings(args)).config
    model_path = str(resolve_model(config.model.path))
    args.file, args.lines = args.file[0], args.lines or 20
    text = open(args.file, encoding="utf-8").read()
    before, region, after, pauses = typing_script(text, args.start_line, args.lines, args.every,
                                                  getattr(args, "open_line", "on") == "on")
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    runner = engine.runner
    assert runner is not None
    print(f"model {runner.name} ({runner.template.name}), {runner.threads} threads, {runner.n_gpu_layers} GPU layers; "
          f"typing {len(region)} chars of {args.file} ({args.lines} lines), a request every {args.every} chars "
          f"({len(pauses)} requests), open line {getattr(args, 'open_line', 'on')}")
    provider = _context_provider(args.context) if args.context else None
    path = os.path.realpath(args.file)
    compare = SpeculationComparison(engine) if getattr(args, "speculative", None) == "compare" else None
    latencies, model_latencies, evaluated, reused, prompts, context_ms = [], [], [], [], [], []
    causes: list[tuple[str, float]] = []
    hits = context_kept = 0
    for i, offset in enumerate(pauses):
        typed = region[:offset]
        doc = before + typed + after
        cursor_line = doc.count("\n", 0, len(before) + offset)
        line_start = doc.rfind("\n", 0, len(before) + offset) + 1
        req = CompletionRequest(args.file, doc, cursor_line, len(before) + offset - line_start, path=path)
        t0 = time.perf_counter()
        if provider is not None:
            # What features.context does for each request: the sticky context of the scope.
            ctx = provider.gather(req.document_key, path, doc, cursor_line)
            req.context, req.repo_name, req.repo_path = ctx.files, ctx.repo_name, ctx.repo_path
            req.context_tokens = config.context.max_tokens
            context_ms.append((time.perf_counter() - t0) * 1000)
            context_kept += ctx.reused
        res = engine.complete(req)
        ms = (time.perf_counter() - t0) * 1000
        latencies.append(ms)
        causes.append((res.cause, ms))
        if res.cached:
            hits += 1
        elif res.generation is not None:
            model_latencies.append(ms)
            evaluated.append(res.generation.n_evaluated)
            reused.append(res.generation.n_reused)
            assert engine.builder is not None and engine.builder.last_prompt is not None
            prompts.append((i, engine.builder.last_prompt, res.generation))
            if compare is not None:
                compare.add(engine.builder.last_prompt, res.generation)
        if args.verbose:
            print(f"  {i:3d} {ms:7.0f} ms {'cache' if res.cached else ''} {res.text[:50]!r}", file=sys.stderr)
    print(f"latency, all requests:       {summary(latencies)}")
    print(f"latency, model requests:     {summary(model_latencies)}")
    print(f"type-through cache hits:     {hits}/{len(latencies)}")
    print("latency by cause:")
    print("\n".join(cause_table(causes)))
    if evaluated:
        print(f"prompt tokens per request:   evaluated mean {statistics.fmean(evaluated):.0f} "
              f"(p50 {percentile(evaluated, 50):.0f}), reused mean {statistics.fmean(reused):.0f} "
              f"(p50 {percentile(reused, 50):.0f})")
    if provider is not None:
        print(f"repo context:                {summary(context_ms)} to assemble; kept as it was for "
              f"{context_kept}/{len(pauses)} requests; last prompt's context: "
              f"{sorted({f.path for f in (engine.builder.last_context if engine.builder else [])})}")
        provider.close()
    if compare is not None:
        print("\n".join(compare.report()))
    engine.close()

    # Baseline: the same prompts through plain llama-cpp-python, no reuse.
    if args.baseline_samples and prompts:
        from llama_cpp import Llama

        llm = Llama(model_path=model_path, n_ctx=config.model.n_ctx, n_threads=runner.threads,
                    n_threads_batch=runner.threads, n_gpu_layers=runner.n_gpu_layers, verbose=False)
        step = max(1, len(prompts) // args.baseline_samples)
        sample = prompts[::step][: args.baseline_samples]
        base_ms, ours_ms, same = [], [], 0
        for _i, prompt, gen in sample:
            llm.reset()
            t0 = time.perf_counter()
            out = llm.create_completion(prompt.tokens, max_tokens=max(gen.n_generated, 1), temperature=0.0,
                                        top_k=1, stop=[])
            base_ms.append((time.perf_counter() - t0) * 1000)
            ours_ms.append(gen.prompt_ms + gen.gen_ms)
            fresh = out["choices"][0]["text"]  # type: ignore[index]
            same += int(fresh.startswith(gen.text) or gen.text.startswith(fresh))
        print(f"plain llama-cpp-python, no reuse, {len(sample)} sampled requests: {summary(base_ms)}")
        print(f"slm-lsp on the same requests:                     {summary(ours_ms)}")
        ratio = percentile(base_ms, 50) / percentile(ours_ms, 50)
        print(f"speed-up (p50 no-reuse / p50 slm-lsp):            {ratio:.1f}x")
        print(f"same greedy text as a fresh evaluation:           {same}/{len(sample)}")
    return 0


# -- a working session -------------------------------------------------------------------------------
@dataclass
class Stretch:
    """Typing ``region`` of document ``doc`` back in, after ``kind`` (open, switch, jump, go on)."""

    doc: int
    region: int
    kind: str


@dataclass
class SessionDoc:
    """A file being written: its lines with some regions taken out, typed back in stretches."""

    path: str
    lines: list[str]
    regions: list[tuple[int, int]]
    """(first line, end line) in ``lines``, in file order, not overlapping."""
    typed: list[int] = field(default_factory=list)
    """Characters of each region typed so far."""
    open_line: bool = True
    """A region is typed into a line opened first (``typing_script``'s ``open_line``): its last
    line break is there from the moment the user comes to the place (Enter, Vim's ``o``: the
    cursor then rests on the empty line while they think), and is not typed."""

    def region_text(self, i: int) -> str:
        a, b = self.regions[i]
        return "".join(self.lines[a:b])

    def typed_length(self, i: int) -> int:
        """Characters typed to write region ``i`` (its last line break comes with the opened line)."""
        text = self.region_text(i)
        return len(text) - 1 if self.open_line and text.endswith("\n") else len(text)

    def text(self, active: int, line_open: bool = True) -> tuple[str, int]:
        """The document now, and the offset of the cursor (the end of what region ``active`` has);
        ``line_open`` False: before the user opened the active region's line (as the file opened)."""
        parts: list[str] = []
        cursor, start = 0, 0
        for i, (a, b) in enumerate(self.regions):
            parts.append("".join(self.lines[start:a]))
            region, typed = self.region_text(i), self.typed[i]
            parts.append(region[:typed])
            if i == active:
                cursor = sum(map(len, parts))
            if self.open_line and (typed or (i == active and line_open)) and region.endswith("\n") \
                    and typed < len(region):
                parts.append("\n")  # the opened line's end
            start = b
        parts.append("".join(self.lines[start:]))
        return "".join(parts), cursor


def session_script(paths: list[str], lines: int, open_line: bool = True) -> tuple[list[SessionDoc], list[Stretch]]:
    """The session: in each file, two places to write ``lines`` lines at, each twice (a stretch,
    then its continuation later): at a third of the file and at four fifths. The stretches open
    the first file, then the second, jump within it, go back to the first, open the third, go
    back to the second's jump target, to the first's other place, to the third, and jump in it.
    With more than three files the rest are opened and typed in once each, at the end."""
    docs = []
    for path in paths:
        text = open(path, encoding="utf-8").read()
        ls = text.splitlines(keepends=True)
        first = max(0, len(ls) // 3)
        second = max(first + 2 * lines, len(ls) * 4 // 5)
        regions = [(first, first + lines), (first + lines, first + 2 * lines)]
        if second + 2 * lines <= len(ls):
            regions += [(second, second + lines), (second + lines, second + 2 * lines)]
        docs.append(SessionDoc(path, ls, regions, [0] * len(regions), open_line))
    plan = [(0, 0, "open"), (1, 0, "open"), (1, 2, "jump"), (0, 1, "switch"), (2, 0, "open"), (1, 3, "switch"),
            (0, 2, "switch"), (2, 1, "switch"), (2, 2, "jump")]
    stretches = [Stretch(d, r, kind) for d, r, kind in plan if d < len(docs) and r < len(docs[d].regions)]
    stretches += [Stretch(d, 0, "open") for d in range(3, len(docs))]
    return docs, stretches


@dataclass
class SessionRequest:
    t: float
    """Seconds since the session began, when the request was sent."""
    ms: float
    cause: str
    stretch: int
    first: str
    """The stretch's kind for its first request (open, switch, jump), else empty."""
    cached: bool
    evaluated: int


def run_session_bench(args: argparse.Namespace) -> int:
    from ..engine.service import CompletionEngine, CompletionRequest
    from ..engine.warmup import JUMP_LINES
    from ..models import resolve_model

    if len(args.file) < 2:
        print("error: --session needs 2 or more files (3 for the whole session)", file=sys.stderr)
        return 2
    config = merge_config(_settings(args)).config
    model_path = str(resolve_model(config.model.path))
    docs, stretches = session_script(args.file, args.lines or 3, getattr(args, "open_line", "on") == "on")
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    runner = engine.runner
    assert runner is not None
    print(f"model {runner.name} ({runner.template.name}), {runner.threads} threads; session of {len(stretches)} "
          f"stretches in {len(docs)} files ({', '.join(os.path.basename(d.path) for d in docs)}), "
          f"{args.lines or 3} lines each, a request every {args.every} chars at {args.cps:g} chars/s, "
          f"{args.think_ms} ms before typing at a new place; warmup {args.warmup}, cursor "
          f"{getattr(args, 'cursor', 'on')}, open line {getattr(args, 'open_line', 'on')}, KV states "
          f"{config.completion.kv_states_mb} MiB")
    provider = _context_provider(args.context) if args.context else None
    keys = [f"file://{os.path.realpath(d.path)}" for d in docs]

    def request(i: int, region: int, line_open: bool = True) -> CompletionRequest:
        doc = docs[i]
        text, offset = doc.text(region, line_open)
        line = text.count("\n", 0, offset)
        col = offset - (text.rfind("\n", 0, offset) + 1)
        req = CompletionRequest(keys[i], text, line, col, "python", path=os.path.realpath(doc.path))
        if provider is not None:
            ctx = provider.gather(req.document_key, req.path, text, line)
            req.context, req.repo_name, req.repo_path = ctx.files, ctx.repo_name, ctx.repo_path
            req.context_tokens = config.context.max_tokens
        return req

    records: list[SessionRequest] = []
    opened: set[int] = set()
    last_edit: dict[int, int] = {}
    last_doc = -1
    start = time.perf_counter()
    clock = 0.0
    """Session time at which the user does the next thing (the typist's own clock)."""

    def wait_until(t: float) -> None:
        delay = t - (time.perf_counter() - start)
        if delay > 0:
            time.sleep(delay)

    def arrive(i: int, req: CompletionRequest) -> None:
        """The user is at ``req``'s line of document ``i`` (features/warmup.py's rule): warm there
        when it is another document than the last place or a jump from it."""
        nonlocal last_doc
        if i != last_doc or abs(req.line - last_edit.get(i, -JUMP_LINES - 1)) > JUMP_LINES:
            engine.warm(req)
        last_doc, last_edit[i] = i, req.line

    for si, stretch in enumerate(stretches):
        doc = docs[stretch.doc]
        if stretch.doc not in opened:  # textDocument/didOpen: the server warms the file's top window
            opened.add(stretch.doc)
            engine.warm(request(stretch.doc, stretch.region, line_open=False), top=True)
        if getattr(args, "cursor", "on") == "on":
            # slm/cursor: the cursor rests at the new place while the user reads and thinks.
            arrive(stretch.doc, request(stretch.doc, stretch.region))
        clock = max(clock, time.perf_counter() - start) + args.think_ms / 1000
        wait_until(clock)
        end = doc.typed_length(stretch.region)
        first = stretch.kind
        for offset in range(1, end + 1):
            doc.typed[stretch.region] = offset
            if offset == 1:
                # The first edit at a new place (didChange): the server warms the prompt there.
                arrive(stretch.doc, request(stretch.doc, stretch.region))
            if offset % args.every and offset != end:
                continue
            clock += args.every / args.cps
            wait_until(clock)
            req = request(stretch.doc, stretch.region)
            last_edit[stretch.doc] = req.line
            t0 = time.perf_counter()
            res = engine.complete(req)
            ms = (time.perf_counter() - t0) * 1000
            gen = res.generation
            records.append(SessionRequest(t0 - start, ms, res.cause, si, first, res.cached,
                                          gen.n_evaluated if gen is not None and not res.cached else 0))
            first = ""
            if args.verbose:
                print(f"  {t0 - start:7.1f} s  {ms:7.0f} ms  {res.cause:8s} {stretch.kind:6s} "
                      f"{os.path.basename(doc.path)}:{req.line + 1} {res.text[:40]!r}", file=sys.stderr)
    kv = engine.kv_report()
    engine.close()
    if provider is not None:
        provider.close()

    ms_all = [r.ms for r in records]
    hits = sum(r.cached for r in records)
    print(f"latency, all requests:       p50 {percentile(ms_all, 50):6.0f} ms  p95 {percentile(ms_all, 95):6.0f} ms  "
          f"max {max(ms_all):6.0f} ms  (n={len(ms_all)})")
    print(f"type-through cache:          {hits}/{len(records)} ({100 * hits / max(1, len(records)):.0f}%)")
    for kind in ("open", "switch", "jump"):
        firsts = [r.ms for r in records if r.first == kind]
        if firsts:
            print(f"first suggestion after {kind + ':':7s} p50 {percentile(firsts, 50):6.0f} ms  "
                  f"max {max(firsts):6.0f} ms  (n={len(firsts)})")
    cold = [(r.evaluated, r.ms) for r in records if r.evaluated >= 200]
    if cold:
        print(f"prompt evaluation on this machine: {sum(e for e, _ in cold) / sum(m for _, m in cold) * 1000:.0f} "
              f"tokens/s (requests that evaluated 200+ tokens)")
    typing = [r.evaluated for r in records if r.cause == "typing"]
    if typing:  # what a typing request costs, whatever the machine's speed
        print(f"prompt tokens evaluated per typing request: p50 {percentile(typing, 50):.0f}, "
              f"mean {statistics.fmean(typing):.1f}")
    print(f"KV states kept: {kv['documents']} documents, {kv['mib']} MiB of {kv['limit_mib']} MiB; restored "
          f"{kv['restored']}, evicted {kv['evicted']}; warmups {kv['warmups']} done, {kv['warmups_stopped']} stopped "
          f"by a request")
    print("latency by cause:")
    print("\n".join(cause_table([(r.cause, r.ms) for r in records])))
    if args.plot:
        plot_session(records, stretches, docs, args.plot,
                     f"{runner.name}, {runner.threads} threads, warmup {args.warmup}")
        print(f"plot: {args.plot}")
    return 0


CAUSE_COLOURS = {"open": "tab:red", "switch": "tab:orange", "jump": "tab:purple", "context": "tab:brown",
                 "window": "tab:pink", "refresh": "tab:olive", "typing": "tab:blue", "cache": "tab:green"}


def plot_session(records: list[SessionRequest], stretches: list[Stretch], docs: list[SessionDoc], out: str,
                 title: str) -> None:
    """Each request's latency over the session, coloured by cause; the stretches marked."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=90)
    for cause, colour in CAUSE_COLOURS.items():
        rs = [r for r in records if r.cause == cause]
        if rs:
            # (a cache hit takes well under 10 ms: drawn at 10 ms, at the foot of the log scale)
            ax.scatter([r.t for r in rs], [max(r.ms, 10) / 1000 for r in rs], s=14, c=colour, label=cause)
    for si, stretch in enumerate(stretches):
        t = next((r.t for r in records if r.stretch == si), None)
        if t is not None:
            ax.axvline(t, color="0.85", lw=0.8, zorder=0)
            ax.text(t, 1.02, f"{stretch.kind} {os.path.basename(docs[stretch.doc].path)}", rotation=30, fontsize=6,
                    transform=ax.get_xaxis_transform(), va="bottom")
    ax.axhline(1.5, color="0.5", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.005)
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("latency (s)")
    ax.text(0.01, 0.02, title, fontsize=7, transform=ax.transAxes)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: it hid slow points
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)

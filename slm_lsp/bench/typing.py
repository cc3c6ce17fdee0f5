"""``slm-lsp bench typing``: replay typing part of a real file, a completion request at each pause.

The region (``--lines`` lines from ``--start-line``) is removed and typed back character by
character; every ``--every`` characters the editor pauses and asks for a completion, through
the same engine the server uses (prompt windows, KV reuse, type-through cache). In the same run,
a sample of those requests is replayed through plain llama-cpp-python (``Llama``, cache reset
before each: no reuse) with the same prompt tokens, for the latency ratio, and its greedy output
is compared with ours to show what the KV shift costs in fidelity.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..config import merge_config
from ..engine.service import CompletionEngine, CompletionRequest
from ..models import resolve_model
from . import percentile, summary


def typing_script(text: str, start_line: int, n_lines: int, every: int) -> tuple[str, str, str, list[int]]:
    """(before, region, after, pause offsets into region) for retyping ``region``."""
    lines = text.splitlines(keepends=True)
    if not start_line:
        start_line = max(0, len(lines) // 2 - n_lines // 2)
    before = "".join(lines[:start_line])
    region = "".join(lines[start_line:start_line + n_lines])
    after = "".join(lines[start_line + n_lines:])
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


def run_typing_bench(args: argparse.Namespace) -> int:
    from .. import cli

    settings = cli.cli_settings(args)
    config = merge_config(settings).config
    model_path = str(resolve_model(config.model.path))
    text = open(args.file, encoding="utf-8").read()
    before, region, after, pauses = typing_script(text, args.start_line, args.lines, args.every)
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    runner = engine.runner
    assert runner is not None
    print(f"model {runner.name} ({runner.template.name}), {runner.threads} threads, {runner.n_gpu_layers} GPU layers; "
          f"typing {len(region)} chars of {args.file} ({args.lines} lines), a request every {args.every} chars "
          f"({len(pauses)} requests)")
    provider = _context_provider(args.context) if args.context else None
    path = os.path.realpath(args.file)
    latencies, model_latencies, evaluated, reused, prompts, context_ms = [], [], [], [], [], []
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
        if res.cached:
            hits += 1
        elif res.generation is not None:
            model_latencies.append(ms)
            evaluated.append(res.generation.n_evaluated)
            reused.append(res.generation.n_reused)
            assert engine.builder is not None and engine.builder.last_prompt is not None
            prompts.append((i, engine.builder.last_prompt, res.generation))
        if args.verbose:
            print(f"  {i:3d} {ms:7.0f} ms {'cache' if res.cached else ''} {res.text[:50]!r}", file=sys.stderr)
    print(f"latency, all requests:       {summary(latencies)}")
    print(f"latency, model requests:     {summary(model_latencies)}")
    print(f"type-through cache hits:     {hits}/{len(latencies)}")
    if evaluated:
        print(f"prompt tokens per request:   evaluated mean {statistics.fmean(evaluated):.0f} "
              f"(p50 {percentile(evaluated, 50):.0f}), reused mean {statistics.fmean(reused):.0f} "
              f"(p50 {percentile(reused, 50):.0f})")
    if provider is not None:
        print(f"repo context:                {summary(context_ms)} to assemble; kept as it was for "
              f"{context_kept}/{len(pauses)} requests; last prompt's context: "
              f"{sorted({f.path for f in (engine.builder.last_context if engine.builder else [])})}")
        provider.close()
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

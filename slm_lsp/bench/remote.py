"""``slm-lsp bench remote FILE --remote URL``: typing replayed against a team server, and how much of
each prompt the server took from its prefix cache.

The region is typed back as in ``bench typing`` (a request every ``--every`` characters) through
the engine with ``remote.route = remote``: prompts are built here (sticky windows), sent as text,
streamed back. For each request the server's own report is read: llama-server's ``timings``
(``prompt_n`` evaluated, ``cache_n`` taken from the slot's cache) on ``/completion`` and on its
OpenAI endpoint, vLLM's and SGLang's ``usage.prompt_tokens_details.cached_tokens``, Ollama's
``prompt_eval_count``. A server that reports nothing (llama-cpp-python's) shows ``?``: its log
says it (``Llama.generate: N prefix-match hit``). Prints p50/p95 latency, the time to the first
token, and the share of prompt tokens the server did not evaluate again.
"""

from __future__ import annotations

import argparse
import os
import time

from ..config import merge_config
from ..engine.service import CompletionEngine, CompletionRequest
from ..models import resolve_model
from . import percentile, summary
from .typing import typing_script


def run_remote_bench(args: argparse.Namespace) -> int:
    from .. import cli

    settings = cli.cli_settings(args)
    remote = settings.setdefault("remote", {})
    remote.setdefault("route", "remote")
    if args.slot is not None:
        remote["slot"] = args.slot
    result = merge_config(settings)
    for error in result.errors:
        print(f"warning: {error}")
    config = result.config
    if not config.remote.url or config.remote.route != "remote":
        print("error: give the server with --remote URL (and --route remote, the default here)")
        return 2
    text = open(args.file, encoding="utf-8").read()
    before, region, after, pauses = typing_script(text, args.start_line, args.lines, args.every)
    engine = CompletionEngine(config)
    engine.load(str(resolve_model(config.model.path))).result()
    status = engine.status()
    print(f"prompts built with {status.name} ({status.template}) and sent to the {status.remote}; "
          f"typing {len(region)} chars of {args.file} ({args.lines} lines), a request every {args.every} chars "
          f"({len(pauses)} requests)")
    path = os.path.realpath(args.file)
    latencies: list[float] = []
    first_token: list[float] = []
    evaluated: list[int] = []
    cached: list[int] = []
    backends: dict[str, int] = {}
    for offset in pauses:
        doc = before + region[:offset] + after
        cursor_line = doc.count("\n", 0, len(before) + offset)
        line_start = doc.rfind("\n", 0, len(before) + offset) + 1
        t0 = time.perf_counter()
        res = engine.complete(CompletionRequest(args.file, doc, cursor_line, len(before) + offset - line_start,
                                                path=path))
        ms = (time.perf_counter() - t0) * 1000
        backends[res.backend or res.reason] = backends.get(res.backend or res.reason, 0) + 1
        gen = res.generation
        if res.backend != "remote" or gen is None:
            continue
        latencies.append(ms)
        first_token.append(gen.prompt_ms)
        if gen.n_evaluated >= 0:
            evaluated.append(gen.n_evaluated)
        if gen.n_reused >= 0:
            cached.append(gen.n_reused)
        if args.verbose:
            print(f"  {offset:5d} chars: {ms:6.0f} ms, first token {gen.prompt_ms:5.0f} ms, server evaluated "
                  f"{_n(gen.n_evaluated)} / cached {_n(gen.n_reused)} prompt tokens, {gen.n_generated} generated")
    engine.close()
    print("answered by: " + ", ".join(f"{k} {v}" for k, v in sorted(backends.items())))
    print(f"latency     {summary(latencies)}")
    print(f"first token {summary(first_token)}")
    if evaluated and cached:
        total = sum(evaluated) + sum(cached)
        print(f"server prompt tokens: {sum(evaluated)} evaluated, {sum(cached)} from its cache "
              f"({100 * sum(cached) / max(total, 1):.1f}% reused); per request evaluated p50 "
              f"{percentile(evaluated, 50):.0f}, p95 {percentile(evaluated, 95):.0f} of "
              f"{percentile([e + c for e, c in zip(evaluated, cached)], 50):.0f} (p50 prompt)")
    elif evaluated:
        print(f"server prompt tokens evaluated per request: p50 {percentile(evaluated, 50):.0f}, "
              f"p95 {percentile(evaluated, 95):.0f} (the server does not report its cache)")
    else:
        print("the server reports no prompt token counts (llama-cpp-python's server: see its log, "
              "'Llama.generate: N prefix-match hit, remaining M prompt tokens to eval')")
    return 0


def _n(n: int) -> str:
    return "?" if n < 0 else str(n)

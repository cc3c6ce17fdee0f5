"""Command line: argument parsing only. Each subcommand calls into the package."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF file, hf:OWNER/REPO/FILE.gguf[@REVISION] or ollama:NAME[:TAG] "
                                   "(default: config, $SLM_LSP_MODEL, cache)")
    p.add_argument("--n-gpu-layers", type=int, help="layers to offload to the GPU (-1: all when possible)")
    p.add_argument("--threads", type=int, help="CPU threads (0: auto)")
    p.add_argument("--ctx", type=int, help="context window in tokens")
    p.add_argument("--adapter", help="GGUF LoRA adapter to apply")


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL", help="a team server to send prompts to (remote.url; with "
                                                   "--route remote or auto)")
    p.add_argument("--remote-kind", choices=["openai", "llama-server", "ollama"],
                   help="the server's protocol (remote.kind, default openai)")
    p.add_argument("--remote-model", metavar="NAME", help="model name sent to the server (remote.model)")
    p.add_argument("--remote-timeout-ms", type=int, metavar="MS",
                   help="wait this long for the server's first token before the local model answers "
                        "(remote.timeout_ms, default 3000)")
    p.add_argument("--remote-lora", type=int, metavar="ID",
                   help="llama-server: the server's adapter (its --lora position) for these requests (remote.lora)")
    p.add_argument("--route", choices=["local", "remote", "auto"],
                   help="local model, team server, or the server only when the local model is unsure "
                        "(remote.route, default local)")


def _answer_length_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer-length", choices=["rules", "model", "auto"],
                   help="where nothing is right of the cursor, who ends the answer: the shaping rules' guess "
                        "of one line or a block, the model's own end-of-generation token, or the model while it "
                        "ends its answers itself (completion.answer_length, default auto)")
    p.add_argument("--empty-on-blank-lines", action="store_true",
                   help="let the model end its answer at once on a blank line, showing nothing "
                        "(completion.write_on_blank_lines: false)")


def _speculative_args(p: argparse.ArgumentParser, compare: bool = False) -> None:
    modes = ["off", "lookup", "draft"] + (["compare"] if compare else [])
    compare_help = ("; compare: every request generated again without, with lookup and with the draft model "
                    "(when --draft-model is given), tokens/s and latency side by side") if compare else ""
    p.add_argument("--speculative", choices=modes,
                   help="speculative decoding: drafts from the prompt (lookup) or from --draft-model (draft), "
                        "checked in one batch (speculative.mode)" + compare_help)
    p.add_argument("--draft-model", metavar="GGUF", help="the draft model: same vocabulary, smaller "
                                                         "(speculative.draft_model)")
    p.add_argument("--draft-tokens", type=int, metavar="K", help="most tokens drafted per batch "
                                                                 "(speculative.draft_tokens)")


def cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    model = {k: v for k, v in {"path": args.model, "n_gpu_layers": args.n_gpu_layers, "threads": args.threads,
                               "n_ctx": args.ctx, "adapter": args.adapter}.items() if v is not None}
    remote = {k: v for k, v in {"url": getattr(args, "remote", None), "kind": getattr(args, "remote_kind", None),
                                "model": getattr(args, "remote_model", None),
                                "lora": getattr(args, "remote_lora", None),
                                "timeout_ms": getattr(args, "remote_timeout_ms", None),
                                "route": getattr(args, "route", None)}.items() if v is not None}
    settings: dict[str, Any] = {}
    if model:
        settings["model"] = model
    if remote:
        settings["remote"] = remote
    mode = getattr(args, "speculative", None)
    if mode == "compare":  # the engine loads the draft model when there is one; the bench switches modes
        mode = "draft" if getattr(args, "draft_model", None) else "lookup"
    speculative = {k: v for k, v in {"mode": mode, "draft_model": getattr(args, "draft_model", None),
                                     "draft_tokens": getattr(args, "draft_tokens", None)}.items() if v is not None}
    if speculative:
        settings["speculative"] = speculative
    completion = {k: v for k, v in {"answer_length": getattr(args, "answer_length", None),
                                    "write_on_blank_lines": False if getattr(args, "empty_on_blank_lines", False)
                                    else None}.items() if v is not None}
    if completion:
        settings["completion"] = completion
    return settings


def setup_logging(verbose: bool, log_file: str | None = None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("slm_lsp").setLevel(logging.DEBUG if verbose else logging.INFO)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import create_server

    setup_logging(args.verbose, args.log_file)
    server = create_server(cli_settings(args))
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
        return 0
    # The LSP stream gets its own copy of stdout; fd 1 then points at stderr, so nothing that
    # llama.cpp or a library prints can corrupt the protocol.
    lsp_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    server.start_io(sys.stdin.buffer, lsp_out)  # type: ignore[arg-type]
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from .config import merge_config
    from .engine.service import CompletionEngine, CompletionRequest
    from .models import DEFAULT_MODEL, ModelNotFound, PullError, pull, pullable, resolve_model

    setup_logging(args.verbose)
    file, line, col = _parse_location(args.location)
    text = open(file, encoding="utf-8", errors="replace").read()
    result = merge_config(cli_settings(args))
    for error in result.errors:
        print(f"warning: {error}", file=sys.stderr)
    configured = result.config.model.path or os.environ.get("SLM_LSP_MODEL", "")
    try:
        path = resolve_model(result.config.model.path)
    except ModelNotFound as exc:
        if not (args.pull and pullable(configured)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            path = pull(configured or DEFAULT_MODEL)
        except PullError as exc:
            _print_download_failure(configured or DEFAULT_MODEL, exc, args.location)
            return 2
    # No probe in a child process: a crash here ends this one command, not an editor's server.
    engine = CompletionEngine(result.config, probe_files=False)
    t0 = time.perf_counter()
    try:
        engine.load(str(path)).result()
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_ms = (time.perf_counter() - t0) * 1000
    status = engine.status()
    if status.name is not None:
        print(f"# model {status.name} ({status.template} template), loaded in {load_ms:.0f} ms", file=sys.stderr)
    if status.remote is not None:
        print(f"# route {status.route}: prompts go to the {status.remote}", file=sys.stderr)
    private = _private_reason(result.config, file, text, line - 1)
    if private:
        print(f"# {file} stays on this machine: {private}", file=sys.stderr)
    for attempt in range(args.repeat):
        out = engine.complete(CompletionRequest(file, text, line - 1, col - 1, path=file, private=bool(private)))
        gen = out.generation
        by = f" by {out.backend}" + (f" ({out.route})" if out.route else "") if status.remote is not None else ""
        if gen is not None and gen.backend == "remote":
            print(f"# request {attempt + 1}{by}: prompt {_count(gen.n_evaluated)} evaluated / {_count(gen.n_reused)} "
                  f"cached tokens (server), first token after {gen.prompt_ms:.0f} ms, {gen.n_generated} tokens in "
                  f"{gen.gen_ms:.0f} ms ({gen.stop_reason}), total {out.total_ms:.0f} ms", file=sys.stderr)
        elif gen is not None:
            print(f"# request {attempt + 1}{by}: prompt {gen.n_evaluated} evaluated / {gen.n_reused} reused tokens in "
                  f"{gen.prompt_ms:.0f} ms, {gen.n_generated} tokens generated in {gen.gen_ms:.0f} ms "
                  f"({gen.stop_reason}), total {out.total_ms:.0f} ms", file=sys.stderr)
        else:
            print(f"# request {attempt + 1}: {out.reason}, total {out.total_ms:.1f} ms", file=sys.stderr)
        engine.cache.forget(file)  # so that a repeat measures the model with a warm KV cache
    print(out.text)
    engine.close()
    return 0


def _private_reason(config: Any, file: str, text: str, line: int) -> str | None:
    """Why the file must not go into a remote prompt (as the server decides it), when prompts may
    leave the machine at all; None otherwise."""
    if config.remote.route == "local" or not config.remote.url:
        return None
    from .context.privacy import PrivacyFilter

    try:
        return PrivacyFilter(deny_files=config.remote.deny_files).reason(os.path.abspath(file), text, line)
    except Exception as exc:  # the check failed: fail closed, as the server does
        return f"its privacy could not be checked ({exc})"


def _count(n: int) -> str:
    return "?" if n < 0 else str(n)


def _print_download_failure(name: str, error: Exception, location: str) -> None:
    """One error, then what to run instead: a GGUF file the user has, or one already on disk."""
    from .models import download_advice, find_local_models

    # make sets MAKELEVEL for its recipes, and `make demo` is the target that runs `complete --pull`.
    retry = "make demo" if os.environ.get("MAKELEVEL") else f"slm-lsp complete {location}"
    models, _unreadable = find_local_models()
    print(f"error: could not download {name}: {error}\n{download_advice(retry, models)}", file=sys.stderr)


def _parse_location(location: str) -> tuple[str, int, int]:
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise SystemExit(f"error: expected FILE:LINE:COL (1-based), got {location!r}")
    return parts[0], int(parts[1]), int(parts[2])


def cmd_pull(args: argparse.Namespace) -> int:
    from .models import PullError, pull

    try:
        print(pull(args.name))
    except PullError as exc:
        print(f"error: download failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report

    print(report(cli_settings(args)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    logging.getLogger("slm_lsp").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.bench == "typing":
        from .bench.typing import run_typing_bench

        return run_typing_bench(args)
    if args.bench == "accept":
        from .bench.accept import run_accept_bench

        return run_accept_bench(args)
    if args.bench == "refactor":
        from .bench.refactor import run_refactor_bench

        return run_refactor_bench(args)
    if args.bench == "index":
        from .bench.index import run_index_bench

        return run_index_bench(args)
    if args.bench == "loop":
        from .bench.loop import run_loop_bench

        return run_loop_bench(args)
    if args.bench == "remote":
        from .bench.remote import run_remote_bench

        return run_remote_bench(args)
    if args.bench == "fuzz":
        from .bench.fuzz import run_fuzz_bench

        return run_fuzz_bench(args)
    if args.bench == "router":
        from .bench.router import run_router_bench

        return run_router_bench(args)
    if args.bench == "team":
        from .bench.team import run_team_bench

        rows = run_team_bench(args)
        # Unanswered requests fail the run: a latency table over the answered ones hides them.
        return 0 if all(row["answered"] == row["requests"] for row in rows) else 1
    from .bench.humaneval import run_humaneval_bench

    return run_humaneval_bench(args)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "next-edit":  # held-out commits replayed (bench/next_edit.py)
        from .bench.next_edit import run_next_edit_eval

        setup_logging(args.verbose)
        logging.getLogger("slm_lsp").setLevel(logging.WARNING)
        return run_next_edit_eval(args)
    from .bench.eval import report, run_eval

    if args.compare:  # two finetune runs' gate reports: which adapter completes lines better
        return compare_gate_reports(*args.compare)
    if args.report:
        report(args.report, args.pick_on)
        return 0
    if not args.repo:
        print("slm-lsp eval: a repository, --report RUN.jsonl or --compare A/eval.json B/eval.json", file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    logging.getLogger("slm_lsp").setLevel(logging.WARNING)
    return run_eval(args)


def compare_gate_reports(a_path: str, b_path: str) -> int:
    """``slm-lsp eval --compare A/eval.json B/eval.json``: B's adapter against A's on the held-out
    lines both gates asked, paired line by line (wins, losses, sign test, bootstrap intervals)."""
    from finetune.evaluate import compare_reports

    try:
        reports = [json.loads(Path(path).read_text()) for path in (a_path, b_path)]
        comparison, unpaired = compare_reports(*reports)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: slm-lsp eval --compare: {exc}", file=sys.stderr)
        return 2
    print(f"A {a_path}\nB {b_path}\nB's adapter against A's on {comparison.n} held-out lines both asked"
          + (f" ({unpaired} asked by one only, left out)" if unpaired else "") + ":")
    print(comparison.describe())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from finetune.config import ConfigError, from_args
    from finetune.lora import FinetuneError, main

    try:
        return main(from_args(args))
    except ModuleNotFoundError as exc:  # torch, transformers, peft, accelerate
        print(f"error: {exc}; install the finetune extra: pip install -e '.[finetune]'", file=sys.stderr)
        return 2
    except (ConfigError, FinetuneError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slm-lsp", description="Offline code completion language server.")
    parser.add_argument("--version", action="version", version=f"slm-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the language server (stdio by default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    p.add_argument("--log-file", help="write the log here instead of stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _model_args(p)
    _remote_args(p)
    _speculative_args(p)
    _answer_length_arg(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("complete", help="print the completion the server would give at FILE:LINE:COL (1-based)")
    p.add_argument("location", metavar="FILE:LINE:COL")
    p.add_argument("--repeat", type=int, default=2, help="ask this many times (the second shows KV reuse)")
    p.add_argument("--pull", action="store_true", help="download the default model first if no model is found")
    p.add_argument("-v", "--verbose", action="store_true")
    _model_args(p)
    _remote_args(p)
    _speculative_args(p)
    _answer_length_arg(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("pull", help="download a model into the Hugging Face cache (the only network access)")
    p.add_argument("name", nargs="?", default="llama-3.2-3b",
                   help="a catalog name or hf:OWNER/REPO/FILE.gguf[@REVISION] (a branch, tag or commit)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("doctor", help="print model, build, GPU offload, threads, config, cache dirs and the "
                                      "models already on disk")
    _model_args(p)
    p.set_defaults(func=cmd_doctor)

    from .bench.router import add_arguments as router_arguments
    from .bench.team import add_arguments as team_arguments  # no engine at parse time
    from .bench.typing import add_arguments as typing_arguments

    p = sub.add_parser("bench", help="benchmarks: typing replay latency, HumanEval infilling")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("typing", help="replay typing a file (or a session in several); latency by cause, KV reuse "
                                       "vs. no reuse")
    typing_arguments(b)
    _model_args(b)
    _speculative_args(b, compare=True)
    _answer_length_arg(b)
    b = bsub.add_parser("humaneval", help="HumanEval infilling (single-line, multi-line, random span) pass@1 and "
                                          "exact match: server vs. raw model, paired")
    b.add_argument("--set", choices=["single", "multi", "span"], default="single",
                   help="single-line (1,033 tasks), multi-line (5,815) or random-span-light (164)")
    b.add_argument("--sample", "-n", dest="sample", type=int, metavar="N",
                   help="only N tasks, spread evenly over the set (default: all)")
    b.add_argument("--data", help="the set's .jsonl(.gz) (default: shared/benchmarks/human-eval-infilling)")
    b.add_argument("--skip", type=int, default=0, metavar="K",
                   help="leave out the first K tasks of the selection (finish a run that was stopped)")
    b.add_argument("--shard", metavar="I/N",
                   help="only every N-th task of the selection, from the I-th (N processes split a set)")
    b.add_argument("--report", nargs="+", metavar="JSONL",
                   help="no model: the table of earlier runs' --jsonl files added up (shards, a stopped "
                        "run and its --skip rest), paired task by task")
    b.add_argument("--raw-max-tokens", type=int, metavar="N",
                   help="the raw model's token cap (default: completion.max_tokens on single, 256 on multi "
                        "and span, where it runs to its end-of-generation token)")
    b.add_argument("--typed", type=int, default=0, metavar="K",
                   help="first ask with the last K prefix characters untyped (answer through KV reuse)")
    b.add_argument("--jsonl", help="write every task's outcome here (who answered, the local log-probabilities)")
    b.add_argument("--time-budget-ms", type=int, help="completion.time_budget_ms (a loaded machine or server "
                                                        "cuts answers at the default 2000)")
    b.add_argument("--no-raw", action="store_true", help="leave out the raw-model pass")
    b.add_argument("-v", "--verbose", action="store_true")
    _model_args(b)
    _remote_args(b)
    _speculative_args(b, compare=True)
    _answer_length_arg(b)
    b = bsub.add_parser("loop", help="the event loop's longest stall while typing into a 50,000-line file")
    b.add_argument("file", nargs="?", help="the file to type into (default: a generated Python file)")
    b.add_argument("--lines", type=int, default=50_000, help="lines of the generated file")
    b.add_argument("--chars", type=int, default=600, help="characters to type")
    b.add_argument("--every", type=int, default=6, help="characters typed between completion requests")
    b.add_argument("--interval-ms", type=float, default=15.0, help="time between keystrokes")
    b.add_argument("-v", "--verbose", action="store_true")
    _model_args(b)
    b = bsub.add_parser("fuzz", help="fuzzed messages and a cancel storm over stdio: unanswered requests, RSS growth")
    b.add_argument("--model", help="GGUF file for the server (default: config, $SLM_LSP_MODEL, cache)")
    b.add_argument("--messages", type=int, default=10_000, help="fuzzed messages to send")
    b.add_argument("--checkpoint-every", type=int, default=50, help="messages between checkpoints")
    b.add_argument("--storm-seconds", type=float, default=30.0, help="length of the typing cancel storm")
    b.add_argument("--rate", type=float, default=100.0, help="completion requests a second in the storm")
    b.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait for its answer")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("-v", "--verbose", action="store_true")
    b = bsub.add_parser("router", help="auto's accuracy, share sent and latency replayed from a local and a "
                                       "remote bench humaneval --jsonl run (thresholds picked on one draw, "
                                       "reported on another)")
    router_arguments(b)
    b = bsub.add_parser("team", help="N developers typing at once against one team server: p50/p95 and tokens/s "
                                     "per user, next to the in-process model")
    team_arguments(b)
    _model_args(b)
    b = bsub.add_parser("remote", help="typing replayed against a team server: latency and the server's prefix "
                                       "cache (prompt tokens evaluated vs cached per request)")
    b.add_argument("file")
    b.add_argument("--every", type=int, default=6, help="characters typed between requests")
    b.add_argument("--lines", type=int, default=10, help="lines of the file to retype")
    b.add_argument("--start-line", type=int, default=0, help="first line to retype (0: the middle of the file)")
    b.add_argument("--slot", type=int, help="llama-server slot (remote.slot: -1 one per user, -2 the server picks)")
    b.add_argument("-v", "--verbose", action="store_true", help="print every request")
    _model_args(b)
    _remote_args(b)
    from .bench.accept import add_arguments as accept_arguments

    b = bsub.add_parser("accept", help="accept a suggestion, then the time to the next one: with and without "
                                       "the prefetch after an accept, over the wire")
    accept_arguments(b)
    _model_args(b)
    from .bench.refactor import add_arguments as refactor_arguments

    b = bsub.add_parser("refactor", help="the edit actions (docstring, type hints, simplify, rewrite) on HumanEval "
                                         "functions: the share that parses, still passes its tests, did the thing")
    refactor_arguments(b)
    _model_args(b)
    b = bsub.add_parser("index", help="repo index: full index time, peak memory, one-file update, context p50/p95")
    b.add_argument("repo")
    b.add_argument("--requests", type=int, default=200, help="context requests to time")
    b.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="line completion on a repository: in-file vs. repo context vs. Jaccard baseline")
    p.add_argument("repo", nargs="?", help="the repository (not with --report)")
    p.add_argument("-n", type=int, default=40, help="tasks (3/4 on lines using names imported from the repo)")
    p.add_argument("--mode", default="all", help="infile, repo, baseline, a comma list, both (infile,repo) or all")
    p.add_argument("--prefix-tokens", type=int, default=768, help="prefix budget")
    p.add_argument("--suffix-tokens", type=int, default=256, help="suffix budget")
    p.add_argument("--context-tokens", type=int, default=1024, help="repo context budget")
    p.add_argument("--baseline-tokens", type=int, default=0,
                   help="cap the baseline's windows at this many tokens (0: all of its windows)")
    p.add_argument("--cross-file-only", action="store_true", help="only the tasks on cross-file lines")
    p.add_argument("--source-budget-ms", type=int, default=0,
                   help="time budget of each context source (0: the config's context.time_budget_ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", help="write every task's outcome here")
    p.add_argument("--report", nargs="+", metavar="RUN.jsonl",
                   help="no model: compare in-file and repo context over finished --jsonl runs (per repository and "
                        "pooled, paired counts, what the context cost, a confidence check choosing between answers)")
    p.add_argument("--pick-on", nargs="+", default=[], metavar="RUN.jsonl",
                   help="with --report: runs on which the confidence check's margins are picked (not reported)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each task")
    _model_args(p)
    p.add_argument("--task", choices=["infile-line", "next-edit"], default="infile-line",
                   help="infile-line: line completion (the modes above); next-edit: next-edit suggestions "
                        "replayed on the repository's most recent commits, -n steps (README: Next-edit: learning "
                        "from history)")
    from .bench.next_edit import add_arguments as next_edit_arguments

    next_edit_arguments(p)
    _remote_args(p)
    p.set_defaults(func=cmd_eval)

    from finetune.config import add_arguments as finetune_arguments  # no torch at parse time

    p = sub.add_parser("finetune", help="adapt the model to a repository with LoRA; writes a GGUF adapter",
                       description="LoRA-finetune the model on REPO and export OUT/adapter.gguf (see README: "
                                   "Fine-tuning). Defaults < --preset < the flags given.")
    finetune_arguments(p)
    p.set_defaults(func=cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)

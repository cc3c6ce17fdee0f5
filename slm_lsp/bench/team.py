"""``slm-lsp bench team``: N developers typing at once against one team server.

Each simulated developer runs the typing replay of ``bench typing`` (a region of a file removed
and typed back, a completion request every ``--every`` characters) in a file of their own,
through a real slm-lsp engine of their own whose ``remote`` route points at the server: the
prompt is built locally, sent over HTTP, streamed back and shaped, as in the editor. All users
start together; each waits for its answer (plus ``--char-ms`` per typed character) before it
types on. For each number of users the bench prints per-user p50/p95 latency and tokens/s, and
first the in-process model answering one user on the same machine, for comparison.

The server is either given (``--endpoint``) or started by the bench
(``--serve-model``: llama-server with a slot for each user of the largest count, continuous
batching and ``--cache-reuse``, with ``--server-args`` for the rest). One server serves every
user count, as a team's would: a user's slot keeps its prompt cache from one count to the next.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import percentile

if TYPE_CHECKING:  # the engine is imported when the bench runs: `slm-lsp --help` stays quick
    from ..config import Config
    from ..engine.service import CompletionEngine, CompletionRequest, CompletionResult

REPO = Path(__file__).resolve().parents[2]
SERVER_ENV = "SLM_LSP_LLAMA_SERVER"
"""Environment variable naming a llama-server binary (else the one ``make llama-server`` built)."""


def find_llama_server(explicit: str | None = None) -> Path | None:
    """The llama-server binary: ``explicit``, $SLM_LSP_LLAMA_SERVER, the one that
    ``make llama-server`` builds into this checkout, or the first on PATH."""
    candidates = [explicit, os.environ.get(SERVER_ENV), str(REPO / ".cache" / "llama-server" / "bin" / "llama-server"),
                  shutil.which("llama-server")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


# -- the server ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    pass


@dataclass
class LlamaServer:
    """A llama-server process on 127.0.0.1 serving one model (start with ``with``)."""

    binary: Path
    model: str
    slots: int = 1
    ctx_per_slot: int = 4096
    threads: int = 0
    cache_reuse: int = 256
    """``--cache-reuse``: the smallest chunk of a cached prompt that llama-server shifts into
    place to reuse it (0: off; then only a common prefix is reused)."""
    cont_batching: bool = True
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 120.0
    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "-m", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               "-np", str(self.slots), "-c", str(self.ctx_per_slot * self.slots),
               "--cache-reuse", str(self.cache_reuse),
               "--cont-batching" if self.cont_batching else "--no-cont-batching"]
        if self.threads > 0:
            cmd += ["-t", str(self.threads), "-tb", str(self.threads)]
        return cmd + self.extra_args

    def __enter__(self) -> LlamaServer:
        import httpx

        self.port = self.port or free_port()
        fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log_file:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerError(f"llama-server exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise ServerError(f"llama-server was not ready after {self.startup_timeout_s:.0f} s: "
                                      f"{self.log_tail()}")
                time.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None and not os.environ.get("SLM_LSP_KEEP_SERVER_LOG"):
            self.log_path.unlink(missing_ok=True)


# -- one developer -------------------------------------------------------------------------------

@dataclass
class UserRun:
    """What one simulated developer saw."""

    user: int
    file: str
    requests: int = 0
    answered: int = 0
    """Requests that got an answer that is not an error (an empty completion is an answer)."""
    latencies_ms: list[float] = field(default_factory=list)
    """Every request, type-through cache hits included."""
    model_latencies_ms: list[float] = field(default_factory=list)
    """The requests a model answered (no cache hit)."""
    generated: int = 0
    evaluated: int = 0
    reused: int = 0
    prompt_counts: int = 0
    """Answers whose prompt token counts are known (a server may not report them)."""
    cache_hits: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    warmup_ms: float = float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of waiting for a model's answer."""
        seconds = sum(self.model_latencies_ms) / 1000
        return self.generated / seconds if seconds > 0 else float("nan")


def user_requests(path: str, lines: int, every: int, key: str) -> list[CompletionRequest]:
    """The requests of one typing replay of ``path`` (its middle ``lines`` lines retyped)."""
    from ..engine.service import CompletionRequest
    from .typing import typing_script

    text = open(path, encoding="utf-8").read()
    before, region, after, pauses = typing_script(text, 0, lines, every)
    requests = []
    for offset in pauses:
        doc = before + region[:offset] + after
        cursor = len(before) + offset
        line = doc.count("\n", 0, cursor)
        column = cursor - (doc.rfind("\n", 0, cursor) + 1)
        requests.append(CompletionRequest(key, doc, line, column, path=os.path.realpath(path)))
    return requests


def warm_up(engine: CompletionEngine, run: UserRun, request: CompletionRequest, timeout_s: float = 600.0) -> None:
    """The user had the file open before typing: its first request fills the server's cache for
    it (timed in ``run.warmup_ms``, not counted in the replay)."""
    t0 = time.perf_counter()
    engine.complete(request, timeout=timeout_s)
    run.warmup_ms = (time.perf_counter() - t0) * 1000


def replay(engine: CompletionEngine, run: UserRun, requests: Sequence[CompletionRequest], *,
           pause_s: float = 0.0, start: threading.Barrier | None = None, timeout_s: float = 600.0) -> UserRun:
    """Send ``requests`` one after the other, each once the previous one is answered (all users
    at once: each waits at ``start`` first)."""
    if start is not None:
        start.wait()
    for request in requests:
        run.requests += 1
        t0 = time.perf_counter()
        try:
            result: CompletionResult | None = engine.complete(request, timeout=timeout_s)
        except Exception as exc:  # a timeout: counted, the replay goes on
            result = None
            run.reasons[f"exception: {type(exc).__name__}"] += 1
        ms = (time.perf_counter() - t0) * 1000
        run.latencies_ms.append(ms)
        if result is not None:
            run.reasons[result.reason] += 1
            if not result.reason.startswith("error") and result.reason not in ("no-model", "cancelled", "superseded"):
                run.answered += 1
            if result.cached:
                run.cache_hits += 1
            elif result.generation is not None:
                gen = result.generation
                run.model_latencies_ms.append(ms)
                run.generated += gen.n_generated
                if gen.n_evaluated >= 0 and gen.n_reused >= 0:
                    run.evaluated += gen.n_evaluated
                    run.reused += gen.n_reused
                    run.prompt_counts += 1
                run.backends[gen.backend] += 1
        if pause_s:
            time.sleep(pause_s)
    return run


# -- one level (N users) -------------------------------------------------------------------------

@dataclass
class LevelRun:
    label: str
    users: list[UserRun]
    wall_s: float

    def all_latencies(self) -> list[float]:
        return [ms for u in self.users for ms in u.model_latencies_ms]

    @property
    def requests(self) -> int:
        return sum(u.requests for u in self.users)

    @property
    def answered(self) -> int:
        return sum(u.answered for u in self.users)

    def row(self) -> dict[str, float | int | str]:
        lat = self.all_latencies()
        rates = [u.tokens_per_s for u in self.users if u.model_latencies_ms]
        generated = sum(u.generated for u in self.users)
        counted = sum(u.prompt_counts for u in self.users)
        return {
            "label": self.label,
            "users": len(self.users),
            "requests": self.requests,
            "answered": self.answered,
            "cache_hits": sum(u.cache_hits for u in self.users),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "over_3s": sum(ms > SLOW_MS for ms in lat) / len(lat) if lat else float("nan"),
            "worst_user_p95_ms": max((percentile(u.model_latencies_ms, 95) for u in self.users
                                      if u.model_latencies_ms), default=float("nan")),
            "user_tok_s": statistics.median(rates) if rates else float("nan"),
            "total_tok_s": generated / self.wall_s if self.wall_s > 0 else float("nan"),
            "warmup_p50_ms": percentile([u.warmup_ms for u in self.users if not math.isnan(u.warmup_ms)], 50),
            "evaluated": sum(u.evaluated for u in self.users) / counted if counted else float("nan"),
            "reused": sum(u.reused for u in self.users) / counted if counted else float("nan"),
        }


def run_level(label: str, engines: Sequence[CompletionEngine], plans: Sequence[tuple[str, list[CompletionRequest]]],
              pause_s: float = 0.0, warmup: bool = True) -> LevelRun:
    """Every user replays its plan in a thread of its own, all starting together (with
    ``warmup``, after each one's first request, sent one user after the other)."""
    start = threading.Barrier(len(engines) + 1)
    runs = [UserRun(i, file) for i, (file, _) in enumerate(plans)]
    threads = []
    for engine, run, (_, requests) in zip(engines, runs, plans):
        if warmup and requests:
            # One user after the other: developers do not all open their files at the same instant.
            warm_up(engine, run, requests[0])
            requests = requests[1:]
        threads.append(threading.Thread(target=replay, args=(engine, run, requests),
                                        kwargs={"pause_s": pause_s, "start": start},
                                        name=f"team-user-{run.user}", daemon=True))
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    return LevelRun(label, runs, time.perf_counter() - t0)


@contextmanager
def engines_for(configs: Sequence[Config], model_path: str) -> Iterator[list[CompletionEngine]]:
    """One loaded engine per config (each developer's own slm-lsp), closed afterwards."""
    from ..engine.service import CompletionEngine

    engines = [CompletionEngine(cfg, probe_files=False) for cfg in configs]
    try:
        for engine in engines:
            engine.load(model_path).result()
        yield engines
    finally:
        for engine in engines:
            engine.close()


def remote_config(base: Config, url: str, kind: str, slot: int | None, timeout_ms: int) -> Config:
    """A user's config: every request to the server at ``url``, waiting up to ``timeout_ms`` for
    each token; no local fallback (a failure shows as a failure, not as the local model's answer)."""
    remote = dataclasses.replace(base.remote, route="remote", url=url, kind=kind, fallback=False,
                                 timeout_ms=timeout_ms)
    if slot is not None:
        remote.slot = slot
    return dataclasses.replace(base, remote=remote)


def user_files(files: Sequence[str], n: int) -> list[str]:
    """The file of each of ``n`` users (cycling through ``files`` when there are fewer)."""
    return [files[i % len(files)] for i in range(n)]


def default_files(min_lines: int) -> list[str]:
    """This package's own modules, the longer ones first (stable between runs)."""
    package = REPO / "slm_lsp"
    sized = []
    for path in package.rglob("*.py"):
        n = path.read_text(encoding="utf-8").count("\n")
        if n >= min_lines:
            sized.append((-n, str(path.relative_to(REPO))))
    return [str(REPO / name) for _, name in sorted(sized)][:16]


# -- the report ----------------------------------------------------------------------------------

SLOW_MS = 3000.0
"""An editor's default ``remote.timeout_ms``: a request slower than this would have fallen back."""

HEADER = (f"{'':>26} {'users':>5} {'answered':>9} {'cache':>5} {'p50 ms':>7} {'p95 ms':>7} {'>3 s':>5} "
          f"{'worst p95':>9} {'tok/s/user':>10} {'tok/s all':>9} {'prompt eval/reused':>18}")


def format_row(row: dict[str, float | int | str]) -> str:
    answered = f"{row['answered']}/{row['requests']}"
    prompt = f"{row['evaluated']:.0f}/{row['reused']:.0f}"
    return (f"{row['label']:>26} {row['users']:>5} {answered:>9} {row['cache_hits']:>5} {row['p50_ms']:>7.0f} "
            f"{row['p95_ms']:>7.0f} {row['over_3s']:>5.0%} {row['worst_user_p95_ms']:>9.0f} {row['user_tok_s']:>10.1f} "
            f"{row['total_tok_s']:>9.1f} {prompt:>18}")


def knee(rows: Sequence[dict[str, float | int | str]], factor: float = 2.0) -> int | None:
    """The most users whose p50 stays within ``factor`` times the one-user p50 (None: no rows)."""
    remote = [r for r in rows if r["label"] == "server"]
    if not remote:
        return None
    base = float(remote[0]["p50_ms"])
    if math.isnan(base):
        return None
    best = int(remote[0]["users"])
    for r in remote:
        if float(r["p50_ms"]) <= factor * base:
            best = int(r["users"])
    return best


# -- the command -----------------------------------------------------------------------------------

def parse_users(text: str) -> list[int]:
    try:
        users = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"error: --users takes a comma list of numbers, got {text!r}") from None
    if not users or users[0] < 1 or users[-1] > 64:
        raise SystemExit(f"error: --users must be between 1 and 64, got {text!r}")
    return users


def run_team_bench(args: argparse.Namespace,
                   out: Callable[[str], None] = print) -> list[dict[str, float | int | str]]:
    """Run the bench; returns the table's rows (the in-process row first, then one per level)."""
    from .. import cli
    from ..config import merge_config
    from ..models import resolve_model

    if not args.endpoint and not args.serve_model:
        raise SystemExit("error: give --endpoint URL (a running server) or --serve-model GGUF (the bench starts "
                         "llama-server)")
    users = parse_users(args.users)
    if threading.current_thread() is threading.main_thread():
        # Killed with SIGTERM (timeout, kill): unwind, so that the llama-server it started stops too.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = cli.cli_settings(args)
    result = merge_config(settings)
    for error in result.errors:
        out(f"warning: {error}")
    base = result.config
    model_path = str(resolve_model(base.model.path or args.serve_model or ""))
    files = args.files or default_files(args.lines * 2)
    if not files:
        raise SystemExit("error: no files to type into")
    plans_for = {n: [(f, user_requests(f, args.lines, args.every, f"{os.path.realpath(f)}#user{i}"))
                     for i, f in enumerate(user_files(files, n))] for n in users}
    pause_s = args.char_ms * args.every / 1000
    out(f"typing {args.lines} lines per user, a request every {args.every} chars "
        f"({len(plans_for[users[0]][0][1])} requests for user 0), {args.char_ms} ms per typed char; "
        f"prompts built with {Path(model_path).name}")
    rows: list[dict[str, float | int | str]] = []
    if args.local:
        local = dataclasses.replace(base, remote=dataclasses.replace(base.remote, route="local"))
        with engines_for([local], model_path) as engines:
            rows.append(run_level("in-process (local)", engines, plans_for[users[0]][:1], pause_s).row())
        out(HEADER)
        out(format_row(rows[-1]))
    slots = args.slots or users[-1]
    with _server(args, slots, base.model.n_ctx) as url:
        for n in users:
            configs = [remote_config(base, url, args.kind, _slot(args, i, slots), args.timeout_ms) for i in range(n)]
            with engines_for(configs, model_path) as engines:
                level = run_level("server", engines, plans_for[n], pause_s)
            rows.append(level.row())
            if len(rows) == 1:
                out(HEADER)
            out(format_row(rows[-1]))
            out(f"{'':>26} cold first request (not counted above): p50 {rows[-1]['warmup_p50_ms']:.0f} ms")
            for u in level.users:
                if u.answered < u.requests or args.verbose:
                    out(f"    user {u.user} ({Path(u.file).name}): {u.answered}/{u.requests} answered, "
                        f"{dict(u.reasons)}, backends {dict(u.backends)}")
    k = knee(rows)
    if k is not None:
        out(f"knee: up to {k} users the p50 stays within 2x the one-user p50")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return rows


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _slot(args: argparse.Namespace, user: int, slots: int) -> int | None:
    """llama-server: user i on slot i (their prompt cache stays theirs) unless --any-slot."""
    if args.kind != "llama-server":
        return None
    return -2 if args.any_slot else user % slots


@contextmanager
def _server(args: argparse.Namespace, slots: int, n_ctx: int) -> Iterator[str]:
    """The server for the whole run (the same for every user count, as a team's would be)."""
    if args.endpoint:
        yield args.endpoint.rstrip("/")
        return
    from ..models import resolve_model

    binary = find_llama_server(args.server_bin)
    if binary is None:
        raise SystemExit(f"error: no llama-server binary: build one with `make llama-server`, or give --server-bin "
                         f"or ${SERVER_ENV}")
    server = LlamaServer(binary, str(resolve_model(args.serve_model)), slots=slots,
                         ctx_per_slot=args.server_ctx or n_ctx, threads=args.server_threads,
                         cache_reuse=args.cache_reuse, cont_batching=not args.no_cont_batching,
                         extra_args=shlex.split(args.server_args or ""))
    server.port = free_port()
    print(f"# {shlex.join(server.command()[1:])}", file=sys.stderr)
    with server:
        yield server.url


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("files", nargs="*", help="files to type into, one per user, reused in turn when there are "
                                            "more users (default: this package's longest modules)")
    b.add_argument("--endpoint", metavar="URL", help="the team server (else --serve-model starts one)")
    b.add_argument("--kind", choices=["llama-server", "openai"], default="llama-server",
                   help="the server's protocol (remote.kind)")
    b.add_argument("--remote-model", metavar="NAME",
                   help="model name sent to the server (remote.model; vLLM needs its served model's name)")
    b.add_argument("--users", default="1,2,4,8", help="comma list of simultaneous users")
    b.add_argument("--lines", type=int, default=10, help="lines each user retypes (the middle of its file)")
    b.add_argument("--every", type=int, default=6, help="characters typed between requests")
    b.add_argument("--char-ms", type=float, default=0.0,
                   help="typing time per character between an answer and the next request (0: none)")
    b.add_argument("--no-local", dest="local", action="store_false",
                   help="skip the in-process model's row")
    b.add_argument("--serve-model", metavar="GGUF", help="start llama-server with this model for each user count")
    b.add_argument("--server-bin", help=f"the llama-server binary (default: ${SERVER_ENV}, `make llama-server`'s "
                                        "build, PATH)")
    b.add_argument("--slots", type=int, default=0,
                   help="llama-server -np (0: the largest user count); one server serves every user count")
    b.add_argument("--any-slot", action="store_true",
                   help="let llama-server pick each request's slot (default: user i keeps slot i)")
    b.add_argument("--cache-reuse", type=int, default=256, help="llama-server --cache-reuse (0: off)")
    b.add_argument("--no-cont-batching", action="store_true", help="start llama-server without continuous batching")
    b.add_argument("--server-ctx", type=int, default=0,
                   help="context tokens per slot (0: model.n_ctx, the window the prompts are built for)")
    b.add_argument("--server-threads", type=int, default=0, help="llama-server -t (0: its default)")
    b.add_argument("--server-args", help="more llama-server arguments, one shell-quoted string")
    b.add_argument("--timeout-ms", type=int, default=600_000,
                   help="remote.timeout_ms: how long a request waits for the server's next token (default 10 min: "
                        "the bench measures the server's latency, however long; an editor falls back to its local "
                        "model after 3 s, and the table counts the requests that took longer)")
    b.add_argument("--json", metavar="PATH", help="also write the table's rows here")
    b.add_argument("-v", "--verbose", action="store_true")

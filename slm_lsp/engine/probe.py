"""Try a model (and adapter) in a short-lived child process before the server loads it.

A GGUF file can pass every check and still hit a llama.cpp assertion or a segfault on its first
decode; in the server's own process that ends the server. The child loads the files on the CPU
with a small context, decodes a couple of tokens and exits; a crash there is reported as a
``ModelLoadError`` and the server keeps its working model.

The verdict is remembered per (path, size, modification time) of the model and the adapter, so
a file is probed once per server process: a reload with other settings costs no second probe.
For a real model the probe is one extra load (the page cache makes the load that follows it
faster); for the tiny test model it is the start of a Python process.

Run as ``python -m slm_lsp.engine.probe MODEL [ADAPTER]``; exit code 0 means it worked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from .modelfile import ModelLoadError, file_key

PROBE_TIMEOUT_S = 300.0
PROBE_N_CTX = 256
PROBE_TOKENS = 2
PROBE_TEXT = "def main():\n    "

_verdicts: dict[tuple[tuple[str, int, int], tuple[str, int, int] | None], str] = {}
"""File keys -> "" (worked) or the error message."""
_lock = threading.Lock()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"crashed with {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def probe(model: str, adapter: str | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``ModelLoadError`` unless a child process can load ``model`` (with ``adapter``) and
    decode with it."""
    try:
        key = (file_key(model), file_key(adapter) if adapter else None)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    with _lock:
        verdict = _verdicts.get(key)
    if verdict is None:
        verdict = _run_child(model, adapter, timeout)
        with _lock:
            _verdicts[key] = verdict
    if verdict:
        raise ModelLoadError(verdict)


def _child_command(model: str, adapter: str | None) -> list[str]:
    return [sys.executable, "-m", __name__, model] + ([adapter] if adapter else [])


def _run_child(model: str, adapter: str | None, timeout: float) -> str:
    what = Path(model).name + (f" with the adapter {Path(adapter).name}" if adapter else "")
    cmd = _child_command(model, adapter)
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"a test load of {what} did not finish within {timeout:.0f} s"
    except OSError as exc:
        return f"could not start a test load of {what}: {exc}"
    if done.returncode == 0:
        return ""
    lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if done.returncode == 2 and lines:  # a ModelLoadError, with its message on the last line
        return lines[-1]
    # llama.cpp's last words, e.g. "ggml.c:1234: GGML_ASSERT(...) failed" before an abort.
    said = [line.strip() for line in lines if "GGML_ASSERT" in line or "error" in line.lower()]
    tail = f" ({said[-1][:300]})" if said else ""
    return f"llama.cpp {_describe_exit(done.returncode)} in a test load of {what}{tail}; not loaded"


def main(argv: list[str]) -> int:
    from .model import LlamaRunner
    from .prompt import Prompt

    try:
        runner = LlamaRunner(argv[0], n_gpu_layers=0, threads=1, n_ctx=PROBE_N_CTX)
        if len(argv) > 1:
            runner.set_adapter(argv[1])
        head = runner.bos + runner.tokenize(PROBE_TEXT)
        runner.generate(Prompt(head, [], [], [], PROBE_TEXT, ""), max_tokens=PROBE_TOKENS)
        runner.close()
    except ModelLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

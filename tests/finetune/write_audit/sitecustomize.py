"""Put first on PYTHONPATH of a subprocess (tests/finetune/test_lora_distributed.py): every Python
process records, through an audit hook, each write it makes under the folder named by
SLM_LSP_WRITE_AUDIT_DIR: open for writing, mkdir, rename/replace, link, remove, rmdir and
chmod. Process RANK (torchrun sets it) appends them to SLM_LSP_WRITE_AUDIT_LOG/writes-RANK.txt,
a file outside the watched folder. The network block of tests/netblock/sitecustomize.py still
applies (only one sitecustomize is imported, so this one runs that one too)."""

import os
import runpy
import sys
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[2] / "netblock" / "sitecustomize.py"))

_WATCHED = os.environ.get("SLM_LSP_WRITE_AUDIT_DIR")
_LOG_DIR = os.environ.get("SLM_LSP_WRITE_AUDIT_LOG")

if _WATCHED and _LOG_DIR:
    _root = os.path.realpath(_WATCHED)
    _log = open(os.path.join(_LOG_DIR, f"writes-{os.environ.get('RANK', 'none')}.txt"), "a", buffering=1)  # noqa: SIM115
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _PATH_EVENTS = {"os.mkdir", "os.remove", "os.rmdir", "os.chmod", "os.truncate", "shutil.rmtree"}
    _TWO_PATH_EVENTS = {"os.rename", "os.link", "os.symlink"}  # os.replace raises os.rename

    def _watched(path: object) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return full == _root or full.startswith(_root + os.sep)

    def _hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                      else isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
            if writes and _watched(path):
                _log.write(f"open {os.fsdecode(path)}\n")
        elif event in _PATH_EVENTS and args and _watched(args[0]):
            _log.write(f"{event} {os.fsdecode(args[0])}\n")
        elif event in _TWO_PATH_EVENTS and len(args) >= 2 and (_watched(args[0]) or _watched(args[1])):
            _log.write(f"{event} {os.fsdecode(args[0])} -> {os.fsdecode(args[1])}\n")

    sys.addaudithook(_hook)

"""The VS Code extension (``editors/vscode``) built and tested with its own tools: ``npm run lint``
(tsc + eslint), ``npm test`` (unit tests, and the wire-protocol test that starts this server through
vscode-jsonrpc with the tiny model), ``npm run build`` and ``npm run package`` (the ``.vsix``).

VS Code itself cannot run here; ``editors/vscode/test/`` explains what stands in for it. Needs
Node.js 18+ and npm (skipped without them); ``npm ci`` runs only when ``node_modules`` is missing
or older than ``package-lock.json`` (it needs the npm registry). The server that node starts
inherits this run's environment, so its network stays blocked (tests/netblock via PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from slm_lsp import __version__, methods
from tests.conftest import server_command

ROOT = Path(__file__).parent.parent.parent
EXTENSION = ROOT / "editors" / "vscode"
VSIX = EXTENSION / f"slm-lsp-{__version__}.vsix"
NODE_MIN_MAJOR = 18

# What the issue asks the extension to offer.
REQUIRED_COMMANDS = {"slm.toggle", "slm.restartServer", "slm.pullModel", methods.COMMAND_LOAD_ADAPTER, "slm.finetune",
                     "slm.showLog"}
Npm = Callable[..., str]


def node_tools() -> tuple[str, str] | str:
    """(node, npm), or why they cannot be used."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "Node.js and npm are needed to build the VS Code extension (not on PATH)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < NODE_MIN_MAJOR:
        return f"the VS Code extension needs Node.js {NODE_MIN_MAJOR}+, found {version or 'nothing'}"
    return node, npm


def needs_install() -> bool:
    # npm ci writes node_modules/.package-lock.json: older than the lock file means stale.
    installed = EXTENSION / "node_modules" / ".package-lock.json"
    return not installed.exists() or installed.stat().st_mtime < (EXTENSION / "package-lock.json").stat().st_mtime


@pytest.fixture(scope="module")
def npm() -> Npm:
    tools = node_tools()
    if isinstance(tools, str):
        pytest.skip(tools)
    _node, npm_path = tools
    base_env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
                    npm_config_audit="false")

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run([npm_path, *args], cwd=EXTENSION, env={**base_env, **(env or {})},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        output = f"{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, f"npm {' '.join(args)} exited {proc.returncode}:\n{output[-6000:]}"
        return output

    if needs_install():
        run("ci", timeout=900)
    return run


def test_lint(npm: Npm):
    npm("run", "lint")


def test_unit_and_wire_protocol_tests(npm: Npm, tiny_model: Path):
    env = {
        "SLM_LSP_SERVER": json.dumps(server_command()),
        "SLM_LSP_TINY_MODEL": str(tiny_model),
        "SLM_LSP_PYTHON": sys.executable,  # an interpreter that has slm_lsp, for the interpreter check
        "NODE_OPTIONS": f"{os.environ.get('NODE_OPTIONS', '')} --test-reporter=tap".strip(),
    }
    output = npm("test", timeout=400, env=env)
    skipped = [line.strip() for line in output.splitlines() if re.match(r"\s*ok \d+ - .*# SKIP", line)]
    assert not skipped, "with the server and the model given, nothing may be skipped:\n" + "\n".join(skipped)
    assert re.search(r"^ok \d+ - the real slm-lsp server over stdio$", output, re.M), output[-4000:]
    counts = {key: int(value) for key, value in re.findall(r"^# (pass|fail|cancelled) (\d+)$", output, re.M)}
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0, output[-4000:]
    assert counts.get("pass", 0) >= 50, counts


def test_bundle_and_vsix(npm: Npm):
    npm("run", "build")
    assert (EXTENSION / "dist" / "extension.js").is_file()
    VSIX.unlink(missing_ok=True)
    npm("run", "package")
    assert VSIX.is_file(), f"npm run package wrote no {VSIX.name}"
    with zipfile.ZipFile(VSIX) as vsix:
        names = set(vsix.namelist())
        manifest = json.loads(vsix.read("extension/package.json"))
        bundle = vsix.read("extension/dist/extension.js").decode()
    assert manifest["version"] == __version__
    assert manifest["main"] == "./dist/extension.js"
    assert REQUIRED_COMMANDS <= {c["command"] for c in manifest["contributes"]["commands"]}
    # Bundled: only package.json, the bundle and the docs; no sources, tests or node_modules.
    assert not {n for n in names if n.startswith(("extension/src/", "extension/test/", "extension/node_modules/"))}
    # The bundle may load only VS Code and Node built-ins: anything else would be missing once installed.
    list_builtins = [str(shutil.which("node")), "-p", "JSON.stringify(require('module').builtinModules)"]
    builtins = set(json.loads(subprocess.run(list_builtins, capture_output=True, text=True, check=True).stdout))
    required = set(re.findall(r"""\brequire\(["']([^"']+)["']\)""", bundle))
    foreign = {name for name in required - {"vscode"} if name.removeprefix("node:") not in builtins}
    assert not foreign, f"the bundle requires modules the .vsix does not contain: {sorted(foreign)}"
    assert "vscode" in required

"""The names shared with the editor clients do not drift: ``slm_lsp/methods.py`` is mirrored by
``editors/vscode/src/constants.ts`` and ``editors/nvim/lua/slm/methods.lua`` (parsed here, not
imported), and ``editors/vscode/package.json`` follows the server's version, commands and settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from slm_lsp import __version__, methods, models
from slm_lsp.config import Config, describe

ROOT = Path(__file__).parent.parent
VSCODE = ROOT / "editors" / "vscode"
CONSTANTS_TS = VSCODE / "src" / "constants.ts"
SETTINGS_TS = VSCODE / "src" / "settings.ts"
PACKAGE_JSON = VSCODE / "package.json"
METHODS_LUA = ROOT / "editors" / "nvim" / "lua" / "slm" / "methods.lua"

# The extension's own commands that the issue asks for, besides the server's.
EXTENSION_COMMANDS = {"slm.toggle", "slm.restartServer", "slm.pullModel", "slm.finetune", "slm.showLog"}


def server_names() -> dict[str, Any]:
    """Every public constant of methods.py: strings, and lists of them."""
    return {name: value for name, value in vars(methods).items()
            if name.isupper() and (isinstance(value, str) or isinstance(value, list))}


def resolve_list(items: str, strings: dict[str, str], prefix: str = "") -> list[str]:
    """``A, B`` (identifiers, optionally ``M.``-prefixed, or quoted strings) → their values."""
    out = []
    for item in (i.strip() for i in items.split(",")):
        if not item:
            continue
        quoted = re.fullmatch(r"""(["'])(.*)\1""", item)
        out.append(quoted.group(2) if quoted else strings[item.removeprefix(prefix)])
    return out


def typescript_names(text: str) -> dict[str, Any]:
    """``export const NAME = 'value';`` and ``export const NAME = [A, B];`` from a TypeScript module."""
    strings = dict(re.findall(r"""^export const (\w+) = ['"]([^'"]*)['"];""", text, re.M))
    names: dict[str, Any] = dict(strings)
    for name, items in re.findall(r"^export const (\w+) = \[([^\]]*)\];", text, re.M):
        names[name] = resolve_list(items, strings)
    return names


def lua_names(text: str) -> dict[str, Any]:
    """``M.NAME = "value"`` and ``M.NAME = { M.A, M.B }`` from a Lua module."""
    strings = dict(re.findall(r"""^M\.(\w+) = ["']([^"']*)["']""", text, re.M))
    names: dict[str, Any] = dict(strings)
    for name, items in re.findall(r"^M\.(\w+) = \{([^}]*)\}", text, re.M):
        names[name] = resolve_list(items, strings, prefix="M.")
    return names


def looks_shared(name: str) -> bool:
    """A client constant named like the server's (a command, method, notification or section name)."""
    return name.startswith("COMMAND") or name.endswith(("_NOTIFICATION", "_SECTION", "_METHOD", "_REQUEST"))


def literal(value: str | list[str], brackets: str) -> str:
    """A string or a list of strings in TypeScript (``brackets="[]"``) or Lua (``"{}"``) syntax."""
    if isinstance(value, str):
        return json.dumps(value)
    return f"{brackets[0]} {', '.join(json.dumps(item) for item in value)} {brackets[1]}"


def test_the_parsers_read_the_server_module_itself():
    # methods.py written in each syntax: the parsers must read back exactly what Python sees.
    expected = server_names()
    ts = "\n".join(f"export const {name} = {literal(value, '[]')};" for name, value in expected.items())
    lua = "\n".join(f"M.{name} = {literal(value, '{}')}" for name, value in expected.items())
    assert typescript_names(ts) == expected
    assert lua_names(lua) == expected
    shared = {"STATUS_NOTIFICATION", "COMMAND_LOAD_ADAPTER", "COMMAND_STATUS", "CONFIG_SECTION", "COMMANDS"}
    assert set(expected) >= shared


@pytest.mark.parametrize("path, parse", [(CONSTANTS_TS, typescript_names), (METHODS_LUA, lua_names)],
                         ids=["vscode", "nvim"])
def test_client_mirrors_declare_the_same_names(path: Path, parse):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    declared = parse(path.read_text(encoding="utf-8"))
    server = server_names()
    for name, value in server.items():
        assert name in declared, f"{path.relative_to(ROOT)} lacks {name} (= {value!r})"
        assert declared[name] == value, f"{path.relative_to(ROOT)}: {name} = {declared[name]!r}, server has {value!r}"
    extra = {name for name in declared if looks_shared(name) and name not in server}
    assert not extra, f"{path.relative_to(ROOT)} declares {sorted(extra)}, which slm_lsp/methods.py does not"


def test_nvim_mirror_has_nothing_else():
    declared = lua_names(METHODS_LUA.read_text(encoding="utf-8"))
    assert set(declared) == set(server_names())


def test_vscode_commands_and_catalog_follow_the_server():
    text = CONSTANTS_TS.read_text(encoding="utf-8")
    names = typescript_names(text)
    block = re.search(r"export const EXTENSION_COMMANDS = \{(.*?)\}", text, re.S)
    assert block, "EXTENSION_COMMANDS not found in constants.ts"
    commands = {key: names[value] if value in names else value.strip("'\"")
                for key, value in re.findall(r"(\w+): ([\w'\".]+),?", block.group(1))}
    assert set(commands.values()) >= EXTENSION_COMMANDS | set(methods.COMMANDS)
    catalog = re.search(r"export const CATALOG_MODELS = \[([^\]]*)\]", text)
    assert catalog, "CATALOG_MODELS not found in constants.ts"
    offered = resolve_list(catalog.group(1), {})
    assert offered[0] == models.DEFAULT_MODEL
    assert sorted(offered) == sorted(models.CATALOG)


def package_json() -> dict[str, Any]:
    return json.loads(PACKAGE_JSON.read_text(encoding="utf-8"))


def client_only_settings() -> list[str]:
    match = re.search(r"export const CLIENT_ONLY_KEYS = \[([^\]]*)\]", SETTINGS_TS.read_text(encoding="utf-8"))
    assert match, "CLIENT_ONLY_KEYS not found in settings.ts"
    return resolve_list(match.group(1), {})


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_extension_version_follows_the_server():
    assert package_json()["version"] == __version__


def test_extension_contributes_the_commands():
    contributed = {c["command"] for c in package_json()["contributes"]["commands"]}
    assert contributed >= EXTENSION_COMMANDS | set(methods.COMMANDS)


def test_extension_settings_are_server_settings_with_the_server_defaults():
    properties: dict[str, dict[str, Any]] = package_json()["contributes"]["configuration"]["properties"]
    client_only = client_only_settings()
    server_defaults = {name: default for name, default, _doc in describe(Config())}
    section = f"{methods.CONFIG_SECTION}."
    for setting, schema in properties.items():
        assert setting.startswith(section), setting
        key = setting.removeprefix(section)
        if key in client_only:
            continue
        name = ".".join(snake(part) for part in key.split("."))
        assert name in server_defaults, f"{setting} is not a server setting (slm_lsp/config.py has no {name})"
        assert schema["default"] == server_defaults[name], (
            f"{setting}: default {schema['default']!r}, server default {server_defaults[name]!r}")
    for key in client_only:
        assert f"{section}{key}" in properties, f"client-only {key} is not contributed"
        # The extension strips these before sending the section: a server setting of that name would be lost.
        assert snake(key) not in server_defaults, f"{key} is a server setting, but the extension never sends it"
    # The settings the issue asks for.
    for setting in ("slm.model.path", "slm.model.nGpuLayers", "slm.completion.enabledLanguages", "slm.debounceMs"):
        assert setting in properties, setting

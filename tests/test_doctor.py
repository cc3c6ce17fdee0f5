"""slm-lsp doctor says where prompts go: on this machine only, or the team server with its kind
and route (a password in its URL never shown), whether the API key is set (never the key), what
never leaves the machine, and a warning for plain http:// to another machine."""

from __future__ import annotations

import pytest

from slm_lsp.doctor import report
from tests.conftest import TINY_MODEL


def doctor(**remote: object) -> str:
    settings: dict[str, object] = {"model": {"path": str(TINY_MODEL)}}
    if remote:
        settings["remote"] = remote
    return report(settings)


def test_prompts_stay_on_this_machine_by_default():
    out = doctor()
    assert "prompts:      on this machine only\n" in out
    assert "WARNING" not in out and "API key" not in out
    # A server set up but the route local: still nothing leaves.
    assert "prompts:      on this machine only\n" in doctor(url="https://gpu-box:8080")


def test_a_team_server_is_named_with_its_kind_route_and_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEAM_KEY", "key-value-never-printed")
    out = doctor(url="https://gpu-box:8080", kind="llama-server", route="remote", model="coder-1.5b",
                 apiKeyEnv="TEAM_KEY", denyFiles=["internal/", "*.sql"])
    assert ("prompts:      to https://gpu-box:8080 (llama-server, model coder-1.5b; route remote: every completion)"
            in out)
    assert "API key:      from $TEAM_KEY (set)" in out and "key-value-never-printed" not in out
    assert "never sent:" in out and "internal/, *.sql" in out
    assert "WARNING" not in out
    monkeypatch.delenv("TEAM_KEY")
    assert "from $TEAM_KEY (not set: no key is sent)" in doctor(url="https://gpu-box:8080", route="auto",
                                                                apiKeyEnv="TEAM_KEY")


def test_plain_http_to_another_machine_is_a_warning():
    out = doctor(url="http://gpu-box:8080", route="auto")
    assert "route auto: the completions the local model is unsure of" in out
    assert "WARNING:      http://gpu-box:8080 is plain http:// to another machine" in out
    assert "WARNING" not in doctor(url="http://127.0.0.1:8080", route="remote")


def test_a_password_in_the_url_is_never_printed():
    out = doctor(url="https://bob:pa55word@gpu-box:8080", route="remote")
    assert "pa55word" not in out
    assert "https://***@gpu-box:8080" in out and "remote.url = 'https://***@gpu-box:8080'" in out

"""features/context.py without a client: the request for a private buffer is marked private
(only when a remote backend could receive it), and the log says where prompts go once at start
and again only when a settings change moves them."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from slm_lsp.config import Config, RemoteConfig
from slm_lsp.engine.requests import CompletionRequest
from slm_lsp.features.context import WorkspaceContext


def server(config: Config) -> SimpleNamespace:
    return SimpleNamespace(config=config, loop=None)


def remote_config(**remote: object) -> Config:
    return dataclasses.replace(Config(), remote=RemoteConfig(**remote))  # type: ignore[arg-type]


@pytest.fixture
def context():
    made: list[WorkspaceContext] = []

    def make(config: Config) -> WorkspaceContext:
        ctx = WorkspaceContext(server(config))  # type: ignore[arg-type]
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.stop()


async def test_a_private_buffer_is_marked_when_a_remote_could_receive_it(context, tmp_path: Path):
    config = remote_config(route="remote", url="https://gpu-box:8080")
    ctx = context(config)
    ls = server(config)
    env = CompletionRequest("file:///w/.env", "TOKEN=abc\n", 1, 0, path=str(tmp_path / ".env"))
    code = CompletionRequest("file:///w/a.py", "def f():\n    return 1\n", 1, 4, path=str(tmp_path / "a.py"))
    keyed = CompletionRequest("file:///w/b.py", "KEY = 'AKIAIOSFODNN7EXAMPLE'\nx = 1\n", 1, 0,
                              path=str(tmp_path / "b.py"))
    unsaved = CompletionRequest("untitled:1", "password: hunter2hunter2\n", 0, 0)
    for request in (env, code, keyed, unsaved):
        await ctx.attach(ls, request)
    assert (env.private, code.private, keyed.private, unsaved.private) == (True, False, True, True)


async def test_nothing_is_checked_while_every_prompt_stays_local(context, tmp_path: Path):
    config = remote_config(route="local", url="https://gpu-box:8080")
    ctx = context(config)
    env = CompletionRequest("file:///w/.env", "TOKEN=abc\n", 1, 0, path=str(tmp_path / ".env"))
    await ctx.attach(server(config), env)
    assert env.private is False  # the mark would change nothing: the check is not paid for


def test_the_log_says_where_prompts_go_at_start_and_on_change(caplog: pytest.LogCaptureFixture):
    ls = server(Config())
    ctx = WorkspaceContext(ls)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="slm_lsp.features.context"):
            ctx.configure(ls.config.context)
            ctx.configure(ls.config.context)  # nothing moved: said once
            ls.config = remote_config(route="auto", url="http://gpu-box:8080", deny_files=["internal/"])
            ctx.configure(ls.config.context)
            ls.config = remote_config(route="auto", url="http://gpu-box:8080", deny_files=["other/"])
            ctx.configure(ls.config.context)  # the deny list changed, not where prompts go
        said = [r.getMessage() for r in caplog.records]
        assert said[0] == "where prompts go: on this machine only"
        assert said[1].startswith("where prompts go: to http://gpu-box:8080 (openai; route auto")
        assert "plain http:// to another machine" in said[2] and caplog.records[2].levelname == "WARNING"
        assert len(said) == 3
        assert ctx.service.private_reason("/w/other/x.py", "") is not None  # the new deny list is in force
    finally:
        ctx.stop()

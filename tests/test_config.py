"""slm_lsp.config: defaults, merging, key styles, validation and the field docs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slm_lsp.config import (
    CompletionConfig,
    Config,
    ContextConfig,
    ModelConfig,
    NextEditConfig,
    RemoteConfig,
    SpeculativeConfig,
    bounds,
    describe,
    merge_config,
)


def _only_error(errors: list[str], field: str) -> str:
    hits = [e for e in errors if e.startswith(field + ":")]
    assert len(hits) == 1, (field, errors)
    return hits[0]


def test_defaults_without_sources():
    result = merge_config()
    assert result.errors == []
    assert result.config == Config()
    c = result.config
    assert c.model.path == ""
    assert c.model.n_gpu_layers == -1
    assert c.model.threads == 0
    assert c.model.n_ctx == 4096
    assert c.completion.prefix_tokens == 1024
    assert c.completion.suffix_tokens == 320
    assert c.completion.max_tokens == 128
    assert c.completion.max_lines == 12
    assert c.completion.near_lines == 0
    assert c.completion.kv_shift is True
    assert c.completion.enabled_languages == ["*"]
    assert c.log_level == "info"


def test_none_and_empty_sources_are_ignored():
    result = merge_config(None, {}, None)
    assert result.errors == []
    assert result.config == Config()


def test_defaults_are_not_shared_between_results():
    a = merge_config().config
    a.completion.enabled_languages.append("python")
    assert merge_config().config.completion.enabled_languages == ["*"]


def test_later_sources_win():
    init_options = {"model": {"path": "/init.gguf", "threads": 2}, "completion": {"max_tokens": 64}}
    workspace = {"model": {"threads": 4}, "logLevel": "debug"}
    cli = {"model": {"path": "/cli.gguf", "threads": None}}  # None: flag not given
    result = merge_config(init_options, workspace, cli)
    assert result.errors == []
    c = result.config
    assert c.model.path == "/cli.gguf"  # the CLI wins
    assert c.model.threads == 4  # workspace over initializationOptions; None does not reset it
    assert c.completion.max_tokens == 64  # only set once: kept
    assert c.log_level == "debug"
    # The order matters: reversed, the first source wins instead.
    assert merge_config(cli, workspace, init_options).config.model.path == "/init.gguf"


def test_camel_case_keys():
    result = merge_config({
        "model": {"nGpuLayers": 0, "nCtx": 8192},
        "completion": {"prefixTokens": 512, "maxLines": 3, "kvShift": False, "suffixRefreshTokens": 64,
                       "enabledLanguages": ["python"]},
        "logLevel": "warning",
    })
    assert result.errors == []
    c = result.config
    assert c.model.n_gpu_layers == 0
    assert c.model.n_ctx == 8192
    assert c.completion.prefix_tokens == 512
    assert c.completion.max_lines == 3
    assert c.completion.kv_shift is False
    assert c.completion.suffix_refresh_tokens == 64
    assert c.completion.enabled_languages == ["python"]
    assert c.log_level == "warning"


def test_snake_case_keys():
    result = merge_config({"model": {"n_gpu_layers": 7}, "completion": {"near_lines": 3}, "log_level": "error"})
    assert result.errors == []
    assert result.config.model.n_gpu_layers == 7
    assert result.config.completion.near_lines == 3
    assert result.config.log_level == "error"


def test_slm_wrapper_is_unwrapped():
    result = merge_config({"slm": {"model": {"nGpuLayers": 3}, "completion": {"maxTokens": 32}}})
    assert result.errors == []
    assert result.config.model.n_gpu_layers == 3
    assert result.config.completion.max_tokens == 32


def test_slm_key_beside_others_is_not_a_wrapper():
    result = merge_config({"slm": {"model": {"threads": 3}}, "logLevel": "debug"})
    assert result.config.model.threads == 0
    assert result.config.log_level == "debug"
    assert _only_error(result.errors, "slm") == "slm: unknown setting"


def test_numeric_strings_and_comma_lists_are_converted():
    result = merge_config({"model": {"threads": " 6 "}, "completion": {"enabledLanguages": "python, rust,,"}})
    assert result.errors == []
    assert result.config.model.threads == 6
    assert result.config.completion.enabled_languages == ["python", "rust"]


@pytest.mark.parametrize(("settings", "field"), [
    ({"model": {"nGpuLayers": "lots"}}, "model.n_gpu_layers"),
    ({"model": {"nCtx": True}}, "model.n_ctx"),  # a bool is not an int
    ({"model": {"path": 42}}, "model.path"),
    ({"model": {"threads": 2.5}}, "model.threads"),
    ({"completion": {"kvShift": "yes"}}, "completion.kv_shift"),
    ({"completion": {"enabledLanguages": ["python", 3]}}, "completion.enabled_languages"),
    ({"logLevel": 3}, "log_level"),
])
def test_invalid_type_names_the_field_and_keeps_the_default(settings, field):
    result = merge_config(settings)
    message = _only_error(result.errors, field)
    assert "expected" in message
    assert result.config == Config()


def test_a_number_string_of_thousands_of_digits_names_the_field():
    # int() refuses strings over 4300 digits with a message that named no setting.
    result = merge_config({"model": {"threads": "9" * 5000}})
    assert "expected int" in _only_error(result.errors, "model.threads")
    assert result.config.model.threads == 0


def test_invalid_value_keeps_the_other_valid_values():
    result = merge_config({"model": {"threads": "x", "nCtx": 2048}})
    _only_error(result.errors, "model.threads")
    assert result.config.model.threads == 0
    assert result.config.model.n_ctx == 2048


@pytest.mark.parametrize(("settings", "field"), [
    ({"modle": {"path": "x"}}, "modle"),
    ({"model": {"nGpuLayerz": 1}}, "model.n_gpu_layerz"),
    ({"completion": {"bogus": 1}}, "completion.bogus"),
])
def test_unknown_keys_are_reported(settings, field):
    result = merge_config(settings)
    assert _only_error(result.errors, field) == f"{field}: unknown setting"
    assert result.config == Config()


def test_section_that_is_not_a_table():
    result = merge_config({"model": "big.gguf"})
    assert "table" in _only_error(result.errors, "model")
    assert result.config.model == ModelConfig()


def test_source_that_is_not_a_table():
    result = merge_config(["model"], {"logLevel": "debug"})  # type: ignore[arg-type]
    assert len(result.errors) == 1 and "table" in result.errors[0]
    assert result.config.log_level == "debug"


@pytest.mark.parametrize(("settings", "field"), [
    ({"model": {"nGpuLayers": -2}}, "model.n_gpu_layers"),
    ({"model": {"threads": 1000}}, "model.threads"),
    ({"model": {"nCtx": 100}}, "model.n_ctx"),
    ({"completion": {"prefixTokens": 8}}, "completion.prefix_tokens"),
    ({"completion": {"suffixTokens": -1}}, "completion.suffix_tokens"),
    ({"completion": {"maxTokens": 0}}, "completion.max_tokens"),
    ({"completion": {"maxTokens": 5000}}, "completion.max_tokens"),
    ({"completion": {"nearLines": -1}}, "completion.near_lines"),
    ({"completion": {"maxLines": 0}}, "completion.max_lines"),
    ({"completion": {"timeBudgetMs": 10}}, "completion.time_budget_ms"),
    ({"completion": {"suffixRefreshTokens": -5}}, "completion.suffix_refresh_tokens"),
    ({"logLevel": "verbose"}, "log_level"),
])
def test_out_of_range_names_the_field_and_keeps_the_default(settings, field):
    result = merge_config(settings)
    section, _, key = field.rpartition(".")
    default = getattr(getattr(Config(), section) if section else Config(), key)
    message = _only_error(result.errors, field)
    assert "out of range" in message and repr(default) in message
    obj = getattr(result.config, section) if section else result.config
    assert getattr(obj, key) == default
    assert result.config == Config()


def test_boundary_values_are_accepted():
    result = merge_config({"model": {"nGpuLayers": -1, "threads": 256, "nCtx": 8192},
                           "completion": {"prefixTokens": 16, "suffixTokens": 0, "maxTokens": 4096,
                                          "nearLines": 0, "maxLines": 1, "timeBudgetMs": 50}})
    assert result.errors == []
    assert result.config.completion.max_tokens == 4096


def test_n_ctx_is_raised_when_the_budgets_do_not_fit():
    result = merge_config({"model": {"nCtx": 1024},
                           "completion": {"prefixTokens": 800, "suffixTokens": 200, "maxTokens": 100}})
    needed = 800 + 200 + 100 + 16
    message = _only_error(result.errors, "model.n_ctx")
    assert str(needed) in message
    assert result.config.model.n_ctx == needed
    # Budgets are left alone: n_ctx grows to hold them.
    assert result.config.completion.prefix_tokens == 800


def test_n_ctx_is_kept_when_the_budgets_fit_exactly():
    result = merge_config({"model": {"nCtx": 1024 + 320 + 128 + 16}})
    assert result.errors == []
    assert result.config.model.n_ctx == 1488


def _numeric_fields() -> list[tuple[str, str, int, int]]:
    """(section, field, low, high) of every int field."""
    out = []
    for section_name, section in (("model", ModelConfig()), ("completion", CompletionConfig()),
                                  ("context", ContextConfig()), ("remote", RemoteConfig())):
        for f in dataclasses.fields(section):
            if f.type in ("int", int):
                limits = bounds(section, f.name)
                assert limits is not None, f"{section_name}.{f.name} has no range"
                out.append((section_name, f.name, limits[0], limits[1]))
    return out


def test_every_numeric_field_has_a_documented_range():
    docs = {name: doc for name, _default, doc in describe()}
    fields = _numeric_fields()
    assert len(fields) == 21
    for section, name, low, high in fields:
        assert low <= getattr(getattr(Config(), section), name) <= high
        assert f"Range: {low} to {high}." in docs[f"{section}.{name}"], f"{section}.{name}"


def test_the_readme_states_every_range():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for section, name, low, high in _numeric_fields():
        heading = f"\n### {section}.{name}\n"
        assert heading in readme, heading
        text = readme.split(heading, 1)[1].split("\n### ", 1)[0]
        assert f"Range: {low} to {high}." in " ".join(text.split()), f"{section}.{name}"


@pytest.mark.parametrize(("section", "name", "low", "high"), _numeric_fields(),
                         ids=[f"{s}.{n}" for s, n, _, _ in _numeric_fields()])
def test_each_range_is_enforced_at_both_ends(section, name, low, high):
    default = getattr(getattr(Config(), section), name)
    small_budgets = {"completion": {"prefixTokens": 16, "suffixTokens": 0, "maxTokens": 1}, "model": {"nCtx": 1 << 20}}
    for value in (low, high):
        result = merge_config(small_budgets, {section: {name: value}})  # so that n_ctx is not raised
        assert getattr(getattr(result.config, section), name) == value
        assert not any(e.startswith(f"{section}.{name}:") for e in result.errors)
    for value in (low - 1, high + 1, 10**12):
        result = merge_config({section: {name: value}})
        assert getattr(getattr(result.config, section), name) == default
        assert "out of range" in _only_error(result.errors, f"{section}.{name}")


def test_a_huge_budget_never_raises_n_ctx_past_its_cap():
    # Issue 13, item 4: prefixTokens 1e9 raised model.n_ctx to about 1e9 (17.6 GB on reload).
    result = merge_config({"slm": {"completion": {"prefixTokens": 1_000_000_000}}})
    assert result.config.completion.prefix_tokens == 1024
    assert result.config.model.n_ctx == 4096
    assert "out of range" in _only_error(result.errors, "completion.prefix_tokens")


def test_budgets_that_no_n_ctx_holds_go_back_to_their_defaults():
    cap = bounds(ModelConfig(), "n_ctx")[1]
    result = merge_config({"completion": {"prefixTokens": 1 << 19, "suffixTokens": 1 << 19, "maxTokens": 4096}})
    c = result.config
    assert (c.completion.prefix_tokens, c.completion.suffix_tokens, c.completion.max_tokens) == (1024, 320, 128)
    assert c.model.n_ctx == 4096 <= cap
    assert "do not fit the largest model.n_ctx" in _only_error(result.errors, "completion")


@pytest.mark.parametrize("settings", [
    {"completion": {"prefixTokens": 1 << 19}},
    {"completion": {"prefixTokens": 1 << 19, "suffixTokens": (1 << 19) - 1, "maxTokens": 4096}},
    {"model": {"nCtx": 1 << 20}, "completion": {"prefixTokens": 1 << 19, "suffixTokens": 1 << 19}},
    {"model": {"nCtx": 256}, "completion": {"suffixTokens": 1 << 19}},
])
def test_validation_leaves_every_field_within_its_range(settings):
    c = merge_config(settings).config
    for section, name, low, high in _numeric_fields():
        assert low <= getattr(getattr(c, section), name) <= high, f"{section}.{name}"
    needed = c.completion.prefix_tokens + c.completion.suffix_tokens + c.completion.max_tokens + 16
    assert needed <= c.model.n_ctx


def test_describe_documents_every_field():
    rows = describe()
    names = [name for name, _default, _doc in rows]
    expected = ([f"model.{f.name}" for f in dataclasses.fields(ModelConfig)]
                + [f"completion.{f.name}" for f in dataclasses.fields(CompletionConfig)]
                + [f"context.{f.name}" for f in dataclasses.fields(ContextConfig)]
                + [f"remote.{f.name}" for f in dataclasses.fields(RemoteConfig)]
                + [f"speculative.{f.name}" for f in dataclasses.fields(SpeculativeConfig)]
                + [f"next_edit.{f.name}" for f in dataclasses.fields(NextEditConfig)]
                + ["log_level"])
    assert names == expected
    for name, _default, doc in rows:
        assert doc.strip(), f"{name} has no docstring"
        assert "\n" not in doc and "  " not in doc  # whitespace normalised
    by_name = {name: (default, doc) for name, default, doc in rows}
    assert by_name["model.n_gpu_layers"][0] == -1
    assert by_name["completion.enabled_languages"][0] == ["*"]
    assert by_name["model.threads"][1].startswith("CPU threads for llama.cpp.")


def test_describe_shows_the_values_of_a_given_config():
    config = merge_config({"completion": {"maxLines": 4}}).config
    assert dict((n, d) for n, d, _ in describe(config))["completion.max_lines"] == 4


def test_remote_defaults_keep_everything_on_this_machine():
    rc = merge_config().config.remote
    assert (rc.route, rc.url, rc.kind, rc.model) == ("local", "", "openai", "")
    assert rc.api_key_env == "SLM_LSP_REMOTE_API_KEY"
    assert rc.deny_files == []


def test_remote_settings_in_camel_case():
    result = merge_config({"remote": {"route": "auto", "url": "https://gpu.example:8443/", "kind": "llama-server",
                                      "model": "qwen", "apiKeyEnv": "TEAM_KEY", "timeoutMs": 500,
                                      "connectTimeoutMs": 200, "denyFiles": ["secrets/**"],
                                      "autoMeanLogprob": "-0.25", "autoMinLogprob": -3}})
    assert result.errors == []
    rc = result.config.remote
    assert rc.url == "https://gpu.example:8443"  # the trailing slash is dropped
    assert (rc.route, rc.kind, rc.model, rc.api_key_env) == ("auto", "llama-server", "qwen", "TEAM_KEY")
    assert (rc.timeout_ms, rc.connect_timeout_ms, rc.deny_files) == (500, 200, ["secrets/**"])
    assert (rc.auto_mean_logprob, rc.auto_min_logprob) == (-0.25, -3.0)


@pytest.mark.parametrize(("settings", "field"), [
    ({"route": "cloud"}, "remote.route"),
    ({"kind": "grpc"}, "remote.kind"),
    ({"url": "gpu-box:8080"}, "remote.url"),
    ({"url": "file:///etc/passwd"}, "remote.url"),
    ({"autoMeanLogprob": float("nan")}, "remote.auto_mean_logprob"),
    ({"autoMeanLogprob": float("inf")}, "remote.auto_mean_logprob"),
    ({"autoMeanLogprob": 0.5}, "remote.auto_mean_logprob"),
    ({"autoMeanLogprob": True}, "remote.auto_mean_logprob"),
    ({"autoMinLogprob": 10**400}, "remote.auto_min_logprob"),
    ({"timeoutMs": 10}, "remote.timeout_ms"),
])
def test_bad_remote_settings_name_the_field_and_keep_the_default(settings, field):
    result = merge_config({"remote": settings})
    _only_error(result.errors, field)
    assert result.config.remote == RemoteConfig()


def test_speculative_settings_are_checked():
    result = merge_config({"speculative": {"mode": "guess", "draftTokens": 99, "ngramMin": 5, "ngramMax": 3}})
    sc = result.config.speculative
    assert (sc.mode, sc.draft_tokens, sc.ngram_min, sc.ngram_max) == ("off", 4, 3, 3)
    assert any("speculative.mode" in e for e in result.errors)
    assert any("speculative.draft_tokens" in e for e in result.errors)
    assert any("speculative.ngram_min (5) is above" in e for e in result.errors)
    ok = merge_config({"speculative": {"mode": "draft", "draftModel": "qwen2.5-coder-0.5b", "draftPMin": 0.3}})
    assert not ok.errors and ok.config.speculative.draft_model == "qwen2.5-coder-0.5b"


def test_answer_length_is_one_of_its_values():
    assert merge_config({"completion": {"answerLength": "model"}}).config.completion.answer_length == "model"
    assert merge_config({"completion": {"answerLength": "rules"}}).config.completion.answer_length == "rules"
    result = merge_config({"completion": {"answerLength": "forever"}})
    assert result.config.completion.answer_length == "auto"
    _only_error(result.errors, "completion.answer_length")

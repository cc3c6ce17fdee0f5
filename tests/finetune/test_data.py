"""Finetune data: file filters, the by-file split, node-aligned middles, and examples laid out
exactly like the server's prompts. No torch: the tiny GGUF's llama.cpp tokenizer stands in for
the model's tokenizer (both implement PromptBuilder's Tokenizer protocol)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from finetune.config import ConfigError, FinetuneConfig, from_args
from finetune.data import (
    IDENTIFIER,
    IGNORE_INDEX,
    DataSettings,
    ExampleMaker,
    SourceFile,
    line_span,
    load_files,
    node_spans,
    repo_names,
)
from finetune.evaluate import edit_similarity, line_tasks
from slm_lsp.config import CompletionConfig
from slm_lsp.engine.fim import SPM
from slm_lsp.engine.model import LlamaRunner
from slm_lsp.engine.prompt import PromptBuilder, PromptRequest, plain_fim_prompt
from tests.conftest import TINY_MODEL
from tests.finetune.test_base import _Vocab

REPO = Path(__file__).parent.parent / "data" / "finetune_repo"
KEPT = {"geom/__init__.py", "geom/cli.py", "geom/io/csvio.py", "geom/io/jsonio.py", "geom/ops.py",
        "geom/registry.py", "geom/shapes.py"}


@pytest.fixture(scope="module")
def runner():
    r = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=512)
    yield r
    r.close()


@pytest.fixture(scope="module")
def files():
    return load_files(REPO, heldout_fraction=0.3, seed=0)


def maker_for(runner, files, names=None, **settings):
    return ExampleMaker(files, runner.template, runner, end_token=runner.special("<|endoftext|>"),
                        settings=DataSettings(**settings), repo_name="geom", seed=0, names=names)


def test_filters_drop_generated_vendored_minified_ignored_and_duplicates(files):
    kept = {f.path for f in files.train + files.heldout}
    assert kept == KEPT
    # ops_copy.py duplicates ops.py; constants_pb2.py and tables.py are generated; widget.min.js by
    # name and packed.js by line length are minified; vendor/ is vendored; build/ and secret_*.py
    # (made by the test below) are in .gitignore; geom/io/__init__.py is tiny.
    assert files.dropped["duplicate"] == 1 and files.dropped["generated"] == 3
    assert files.dropped["minified"] == 1 and files.dropped["vendored"] == 1 and files.dropped["tiny"] == 1


def test_huge_and_binary_files_are_dropped(tmp_path):
    shutil.copytree(REPO, tmp_path / "repo")
    (tmp_path / "repo" / "big.py").write_text("x = 1\n" * 50_000)
    (tmp_path / "repo" / "blob.py").write_bytes(b"data = 1\n" * 10 + b"\0\xff")
    fs = load_files(tmp_path / "repo", max_file_bytes=100_000)
    assert fs.dropped["huge"] == 1 and fs.dropped["binary"] == 1


def test_gitignore_is_respected_outside_git(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / "build").mkdir()
    (repo / "build" / "out.py").write_text("print('a build output, ignored by build/ in .gitignore')\n")
    (repo / "geom" / "secret_keys.py").write_text("TOKEN = 'ignored by secret_*.py in .gitignore, never read'\n")
    (repo / "geom" / "io" / ".gitignore").write_text("csvio.py\n")  # nested .gitignore files count too
    assert {f.path for f in (lambda fs: fs.train + fs.heldout)(load_files(repo))} == KEPT - {"geom/io/csvio.py"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_repo_uses_tracked_files_only(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / "untracked.py").write_text("def untracked():\n    return 'not in the index, so not trained on'\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "geom", ".gitignore"], check=True)
    fs = load_files(repo)
    assert {f.path for f in fs.train + fs.heldout} == KEPT


def test_split_is_by_file_deterministic_and_stable(files):
    train, held = {f.path for f in files.train}, {f.path for f in files.heldout}
    assert train and held and not train & held
    assert len(held) == 2  # 30% of 7 files
    again = load_files(REPO, heldout_fraction=0.3, seed=0)
    assert {f.path for f in again.heldout} == held


def test_node_spans_are_syntax_nodes():
    text = (REPO / "geom" / "shapes.py").read_text()
    spans = {text[s:e] for s, e in node_spans(SourceFile("geom/shapes.py", text), max_lines=8)}
    assert "return math.pi * self.radius ** 2" in spans  # a statement
    assert "math.pi * self.radius ** 2" in spans  # an expression
    assert "return Circle(self.radius * factor)" in spans  # a function body (block)
    assert 'super().__init__(side, side)' in spans
    assert all(len(s.splitlines()) <= 8 for s in spans)
    # Non-ASCII text: character offsets, not byte offsets.
    uni = SourceFile("u.py", "name = 'héllo'\nresult = compute(name, 'ü')\n")
    assert "compute(name, 'ü')" in {uni.text[s:e] for s, e in node_spans(uni, 4)}


def test_line_span_is_the_rest_of_a_line():
    import random

    text = "def f(x):\n    total = compute(x) + 1\n    return total\n"
    for seed in range(20):
        start, end = line_span(text, random.Random(seed))
        assert text[end] == "\n" and "\n" not in text[start:end]
        assert not (text[start - 1].isalnum() and text[start].isalnum())  # never inside a word


def test_example_is_the_servers_prompt_then_the_middle(runner, files):
    maker = maker_for(runner, files.train, seq_len=2048, context_fraction=0.0, spm_fraction=0.0)
    f = next(x for x in files.train + files.heldout if x.path == "geom/ops.py")
    start = f.text.index("sum(shape.area()")
    end = f.text.index("\n", start)
    ex = maker.make(f, (start, end))
    assert ex is not None
    middle_ids = runner.tokenize(f.text[start:end]) + [runner.special("<|endoftext|>")]
    # What the server's engine builds for the document without the middle, cursor at the hole
    # (the default server settings; the budgets hold the whole file here).
    doc = f.text[:start] + f.text[end:]
    line = doc.count("\n", 0, start)
    column = start - (doc.rfind("\n", 0, start) + 1)
    cc = CompletionConfig()
    builder = PromptBuilder(runner.template, runner, 10_000, 10_000, runner.bos, cc.near_lines)
    expected = builder.build(PromptRequest(doc, line, column)).tokens
    assert ex.input_ids == expected + middle_ids
    assert ex.labels == [IGNORE_INDEX] * len(expected) + middle_ids
    # ... which is the plain FIM prompt, but for where the server splits the suffix tokens.
    plain = plain_fim_prompt(runner.template, runner.tokenize, runner.special, f.text[:start], f.text[end:],
                             runner.bos)
    assert runner.detokenize(expected) == runner.detokenize(plain)


def test_examples_mix_kinds_layouts_and_context_and_fit(runner, files):
    maker = maker_for(runner, files.train, seq_len=256, spm_fraction=0.3, context_fraction=0.5)
    examples = maker.examples(range(60))
    assert all(len(e.input_ids) <= 256 and len(e.input_ids) == len(e.labels) for e in examples)
    assert {e.kind for e in examples} == {"node", "line", "random"}
    assert {e.layout for e in examples} == {"psm", SPM}
    repo_tok, suf = runner.special("<|repo_name|>"), runner.special("<|fim_suffix|>")
    with_context = [e for e in examples if e.input_ids[0] == repo_tok]
    assert 10 < len(with_context) < 50
    spm = next(e for e in examples if e.layout == SPM and e.input_ids[0] != repo_tok)
    assert spm.input_ids[0] == suf
    assert maker.example(7).input_ids == maker_for(runner, files.train, seq_len=256, spm_fraction=0.3,
                                                   context_fraction=0.5).example(7).input_ids  # deterministic


def test_loss_on_all_labels_the_whole_sequence(runner, files):
    ex = maker_for(runner, files.train, loss_on="all").example(0)
    assert ex.labels == ex.input_ids


def test_line_tasks_hide_the_rest_of_a_line(files):
    tasks = line_tasks(files.heldout, 5, seed=0)
    assert len(tasks) == 5
    for t in tasks:
        original = next(f.text for f in files.heldout if f.path == t.path)
        lines = t.text.split("\n")
        assert lines[t.line][:t.column] + t.target + lines[t.line][t.column:] in original.split("\n")
        assert lines[t.line][t.column:] == ""


def test_edit_similarity():
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "abcd") == 0.0
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_config_presets_flags_and_messages():
    cfg = from_args({"repo": "r", "base": "b.gguf", "out": "o", "preset": "full", "lora_r": 4})
    assert cfg.precision == "bf16" and cfg.lora_r == 4 and "down_proj" in cfg.target_modules
    with pytest.raises(ConfigError, match="--lora-r"):
        from_args({"repo": "r", "base": "b", "out": "o", "lora_r": 0})
    with pytest.raises(ConfigError, match="--base"):
        FinetuneConfig(repo="r", out="o").validate()
    from finetune.config import FIELD_DOCS

    assert all(FIELD_DOCS.get(name) for name in FinetuneConfig.__dataclass_fields__)  # a doc per field


def test_steps_scale_with_the_training_lines_between_the_bounds_unless_given():
    from finetune.config import AUTO_STEPS

    fim = from_args({"repo": "r", "base": "b.gguf", "out": "o"})
    assert fim.steps == 0 and fim.lines_per_step == 375  # the quick preset scales
    assert fim.steps_for(34_003) == 90  # langextract's training files: 90 steps
    assert fim.steps_for(7_632) == AUTO_STEPS[0]  # nanochat's: the fewest
    assert fim.steps_for(10_000_000) == AUTO_STEPS[1]
    assert fim.steps_for(0) == AUTO_STEPS[0]
    assert from_args({"repo": "r", "base": "b", "out": "o", "steps": 7}).steps_for(34_003) == 7
    assert from_args({"repo": "r", "base": "b", "out": "o", "lines_per_step": 100}).steps_for(7_632) == 76
    # next edits learn from commits, not lines: the fewest steps, as measured (README)
    assert from_args({"repo": "r", "base": "b", "out": "o", "task": "next-edit"}).steps_for(34_003) == AUTO_STEPS[0]
    assert from_args({"repo": "r", "base": "b", "out": "o", "preset": "full"}).steps_for(34_003) == 1000
    for bad in ({"steps": -1}, {"lines_per_step": 0}):
        with pytest.raises(ConfigError, match="--" + next(iter(bad)).replace("_", "-")):
            from_args({"repo": "r", "base": "b", "out": "o", **bad})


def test_cli_help_lists_every_field():
    from slm_lsp.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["finetune", "repo", "--base", "m.gguf", "--out", "o", "--target-modules", "q_proj,v_proj",
                              "--keep-anyway"])
    cfg = from_args(args)
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.keep_anyway and cfg.steps == FinetuneConfig.steps


def test_llama3_gets_reserved_special_tokens_as_fim_sentinels():
    from finetune.base import LLAMA3_RESERVED, choose_template
    from slm_lsp.engine.fim import FALLBACK

    llama3 = _Vocab(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
                        + [f"<|reserved_special_token_{i}|>" for i in range(248)])
    template = choose_template({"general.name": "Llama 3.2 3B Instruct"}, llama3)  # type: ignore[arg-type]
    assert template.is_fim and template.name == LLAMA3_RESERVED.name
    assert (template.prefix, template.suffix, template.middle) == (LLAMA3_RESERVED.prefix, LLAMA3_RESERVED.suffix,
                                                                   LLAMA3_RESERVED.middle)
    assert template.stop[0] == "<|end_of_text|>" and template.file_sep and template.repo_name
    assert choose_template({}, _Vocab(["a", "b"])) == FALLBACK  # type: ignore[arg-type]


def test_cli_reports_a_bad_flag_by_name(capsys, tmp_path):
    from slm_lsp.cli import main

    assert main(["finetune", str(REPO), "--base", "m.gguf", "--out", str(tmp_path / "o"), "--lora-r", "0"]) == 2
    assert "--lora-r: at least 1" in capsys.readouterr().err


# -- the repository's own names ------------------------------------------------------------------
def test_name_line_span_puts_the_cursor_at_or_before_a_use_of_the_name():
    import random

    from finetune.data import name_line_span, name_uses

    text = "import os\n\ndef area(shape):\n    total = polygon_area(shape.points) + 1\n    return total\n"
    uses = name_uses(text, {"polygon_area"})
    assert uses == [text.index("polygon_area")]
    line_end = text.index("\n", uses[0])
    cuts = set()
    for seed in range(200):
        start, end = name_line_span(text, uses, random.Random(seed))
        assert end == line_end and start <= uses[0]  # the whole name is in the middle
        assert "polygon_area(shape.points) + 1" in text[start:end]
        cuts.add(start)
    assert uses[0] in cuts and len(cuts) > 1  # at the name, and earlier in the line
    assert name_line_span(text, [], random.Random(0)) is None
    # A name at the start of its line: the cursor at the name, the indentation kept out.
    text = "x = 1\n    polygon_area(x)\n"
    assert name_line_span(text, name_uses(text, {"polygon_area"}), random.Random(0)) == (text.index("polygon_area"),
                                                                                         len(text) - 1)


def test_own_names_fraction_hides_lines_that_use_the_training_files_names(runner, files):
    names = repo_names(files.train)
    assert names
    settings = dict(seq_len=512, context_fraction=0.0, spm_fraction=0.0)
    with_names = maker_for(runner, files.train, names=names, own_names_fraction=1.0, **settings).examples(range(20))
    assert all(e.kind == "name" for e in with_names)
    for e in with_names:
        # the cursor is at or before the name: some name of the repository is in the middle
        assert any(m.group() in names for m in IDENTIFIER.finditer(e.middle)), e.middle
        assert "\n" not in e.middle
    # Off (the default) or without names: the examples are exactly those drawn before the option.
    plain = maker_for(runner, files.train, **settings).examples(range(20))
    names_off = maker_for(runner, files.train, names=names, **settings)
    no_names = maker_for(runner, files.train, own_names_fraction=1.0, **settings)
    for maker in (names_off, no_names):
        assert [e.input_ids for e in maker.examples(range(20))] == [e.input_ids for e in plain]
    half = maker_for(runner, files.train, names=names, own_names_fraction=0.5, **settings).examples(range(60))
    assert 15 <= sum(e.kind == "name" for e in half) <= 45


# -- whole lines, the general corpus, mixing ------------------------------------------------------
def test_whole_lines_widens_to_an_empty_line_at_column_0():
    from finetune.data import whole_lines

    text = "def f(x):\n    total = compute(x) + 1\n    return total\n"
    stmt = text.index("total =")
    assert whole_lines(text, (stmt, text.index("\n", stmt))) == (text.index("    total"), text.index("\n", stmt))
    # An expression with code after it on its line stays as it is.
    call = text.index("compute(x)")
    assert whole_lines(text, (call, call + len("compute(x)"))) is None


def test_whole_line_examples_leave_an_empty_line_with_the_cursor_at_column_0(runner, files):
    maker = maker_for(runner, files.train, seq_len=512, whole_line_fraction=1.0, node_fraction=0.0,
                      line_fraction=1.0, context_fraction=0.0, spm_fraction=0.0)
    examples = maker.examples(range(20))
    assert all(e.kind == "line" for e in examples)
    texts = {f.path: f.text for f in files.train}
    for e in examples:
        lines = texts[e.path].split("\n")
        assert e.middle in lines  # a whole line, its indentation included
    assert any(e.middle.startswith(" ") for e in examples)
    default = maker_for(runner, files.train, seq_len=512, node_fraction=0.0, line_fraction=1.0,
                        context_fraction=0.0, spm_fraction=0.0).examples(range(20))
    # The rest of a line never takes the indentation.
    assert not any(e.middle[:1].isspace() and e.middle in texts[e.path].split("\n") for e in default)


def test_stdlib_corpus_is_library_code_without_tests_or_huge_files():
    import sysconfig

    from finetune.data import SKIPPED_STDLIB_DIRS, is_test_path, load_general_corpus

    corpus = load_general_corpus("stdlib", max_files=60, max_file_bytes=50_000, seed=0)
    assert len(corpus.files) == 60 and corpus.sources == {"stdlib": 60}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in corpus.files:
        assert (stdlib / f.path).read_text(encoding="utf-8").replace("\r\n", "\n") == f.text  # paths as in the library
        assert f.path.endswith(".py") and not is_test_path(f.path) and len(f.text.encode()) <= 50_000
        assert not set(f.path.split("/")[:-1]) & SKIPPED_STDLIB_DIRS
    if (stdlib / "test" / "test_json").is_dir():  # some distributions ship Python without its tests
        assert corpus.dropped["test"] > 100  # Lib/test/ alone has hundreds
    assert corpus.dropped["huge"] > 0  # 50 kB: e.g. typing.py, argparse.py
    again = load_general_corpus("stdlib", max_files=60, max_file_bytes=50_000, seed=0)
    assert [f.path for f in again.files] == [f.path for f in corpus.files]  # a seeded sample
    other = load_general_corpus("stdlib", max_files=60, max_file_bytes=50_000, seed=1)
    assert {f.path for f in other.files} != {f.path for f in corpus.files}


def test_test_paths():
    from finetune.data import is_test_path

    assert is_test_path("test/test_json.py") and is_test_path("pkg/tests/helpers.py")
    assert is_test_path("idlelib/idle_test/mock.py") and is_test_path("x/conftest.py")
    assert is_test_path("pkg/foo_test.py") and not is_test_path("unittest/case.py")
    assert not is_test_path("pkg/testing_utils_readme.py") and not is_test_path("contest.py")


def test_only_permissive_licences_are_trained_on():
    from email.message import Message

    from finetune.data import permissive_licence

    def meta(**fields: str | list[str]) -> Message:
        m = Message()
        for key, value in fields.items():
            for v in value if isinstance(value, list) else [value]:
                m[key.replace("_", "-")] = v
        return m

    assert permissive_licence(meta(License_Expression="MIT"))
    assert permissive_licence(meta(License_Expression="Apache-2.0 OR BSD-3-Clause"))
    assert permissive_licence(meta(Classifier=["License :: OSI Approved :: BSD License", "Typing :: Typed"]))
    assert permissive_licence(meta(License="Python Software Foundation License"))
    assert permissive_licence(meta(License_Expression="GPL-3.0-or-later")) is None
    assert permissive_licence(meta(License_Expression="LGPL-2.1")) is None
    assert permissive_licence(meta(License_Expression="MPL-2.0 AND MIT")) is None  # any copyleft part: out
    mpl = "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)"
    assert permissive_licence(meta(Classifier=mpl)) is None
    assert permissive_licence(meta(Name="nolicence")) is None  # unknown: out


def test_site_packages_corpus_keeps_permissive_packages_only():
    from importlib import metadata

    from finetune.data import load_general_corpus, permissive_licence

    corpus = load_general_corpus("site-packages", max_files=80, seed=0)
    assert len(corpus.files) == 80
    for name in corpus.sources:
        assert permissive_licence(metadata.metadata(name)) is not None, name
    assert all(not f.path.startswith("..") and "/tests/" not in f"/{f.path}" for f in corpus.files)


def test_mixed_examples_draw_the_general_share(runner, files):
    from finetune.data import MixedExamples, SourceFile

    general = [SourceFile("json/fake.py", "import json\n\n\ndef dumps_sorted(obj):\n    "
                          "return json.dumps(obj, sort_keys=True, indent=2)\n" * 3)]
    own = maker_for(runner, files.train, seq_len=256)
    mixed = MixedExamples(own, maker_for(runner, general, seq_len=256), 0.3, seed=0)
    paths = [e.path for e in mixed.examples(range(200))]
    assert 40 <= paths.count("json/fake.py") <= 80
    assert [e.input_ids for e in mixed.examples(range(5))] == [e.input_ids for e in mixed.examples(range(5))]


def test_teach_fim_preset_and_general_corpus_flags():
    cfg = from_args({"repo": "r", "base": "gemma.gguf", "out": "o", "preset": "teach-fim"})
    assert cfg.general_corpus == "stdlib" and 0 < cfg.general_fraction < 1
    assert cfg.spm_fraction == 1.0  # the server then lays prompts out SPM (finetune.base.served_template)
    assert "down_proj" in cfg.target_modules and cfg.whole_line_fraction > 0
    assert from_args({"repo": "r", "base": "b", "out": "o", "general_corpus": "stdlib,site-packages"}).general_corpus
    with pytest.raises(ConfigError, match="--general-corpus"):
        from_args({"repo": "r", "base": "b", "out": "o", "general_corpus": "github"})
    with pytest.raises(ConfigError, match="--general-fraction"):
        from_args({"repo": "r", "base": "b", "out": "o", "general_fraction": 1.0})

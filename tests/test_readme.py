"""The README documents every configuration key and the test command CI runs."""

from pathlib import Path

from slm_lsp.config import describe

ROOT = Path(__file__).parent.parent


def test_every_config_key_has_a_heading():
    readme = (ROOT / "README.md").read_text()
    for name, _default, doc in describe():
        assert f"\n### {name}\n" in readme, name
        assert doc, name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()

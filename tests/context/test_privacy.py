"""slm_lsp.context.privacy: which files and texts must never go into a remote prompt (built-in
secret names, .gitignore, remote.deny_files, secret-looking content, paths outside the
workspace), and where prompts go."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from slm_lsp.context import privacy
from slm_lsp.context.privacy import PrivacyFilter, content_reason, destination, redact


def write(root: Path, rel: str, text: str = "x = 1\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository (its .git folder is what makes it one) with a .gitignore."""
    root = tmp_path / "repo"
    (root / ".git" / "info").mkdir(parents=True)
    write(root, ".gitignore", "local_settings.py\n/out/\n*.log\n!keep.log\n")
    write(root, "app/main.py")
    return root


SECRET_NAMES = [
    ".env", ".env.local", ".env.production", "config/.env.test", "deploy/prod.env", ".envrc",
    "certs/server.pem", "tls/site.key", "ca.crt", "ca.cer", "store.p12", "store.pfx", "keys/app.jks",
    "id_rsa", "id_rsa.pub", "deploy/id_ed25519", "id_ecdsa", "putty.ppk", "vpn.ovpn",
    ".netrc", ".npmrc", ".pypirc", ".pgpass", ".git-credentials", ".htpasswd", ".docker/config.json",
    "credentials", "credentials.json", "config/credentials.yml", "secrets.yaml", "secrets.py", "k8s/secrets/db.yaml",
    "api.secret", "client_secret_1234.apps.json", "infra/prod.tfvars", "terraform.tfstate", "terraform.tfstate.backup",
    ".ssh/config", ".aws/credentials", ".aws/config", ".kube/config", ".gnupg/pubring.kbx",
]
PUBLIC_NAMES = [
    "app/main.py", "env.py", "environment.ts", "keyboard.py", "key.py", "keys.py", "token.py", "tokenizer.rs",
    "secret_santa.py", "credential_store.go", "README.md", "docs/certificates.md", "envs/dev.yaml",
    "pem.py", "src/crt.c", "idrsa.txt",
]


@pytest.mark.parametrize("rel", SECRET_NAMES)
def test_built_in_secret_names_are_private(repo: Path, rel: str):
    reason = PrivacyFilter([str(repo)]).path_reason(str(repo / rel))
    assert reason is not None and reason.startswith("named like a secret"), (rel, reason)


@pytest.mark.parametrize("rel", PUBLIC_NAMES)
def test_code_names_are_not_private(repo: Path, rel: str):
    assert PrivacyFilter([str(repo)]).path_reason(str(repo / rel)) is None, rel


def test_gitignored_files_are_private(repo: Path):
    f = PrivacyFilter([str(repo)])
    assert f.path_reason(str(repo / "app" / "local_settings.py")) == "ignored by git (.gitignore)"
    assert f.path_reason(str(repo / "out" / "gen.py")) == "ignored by git (.gitignore)"
    assert f.path_reason(str(repo / "app" / "out" / "gen.py")) is None  # /out/ is anchored at the root
    assert f.path_reason(str(repo / "run.log")) is not None
    assert f.path_reason(str(repo / "keep.log")) is None  # re-included with !
    assert f.path_reason(str(repo / ".git" / "config")) == "ignored by git (.git)"


def test_nested_gitignore_and_info_exclude(repo: Path):
    write(repo, "lib/.gitignore", "generated_*.py\n")
    write(repo, ".git/info/exclude", "scratch.py\n")
    f = PrivacyFilter([str(repo)])
    assert f.path_reason(str(repo / "lib" / "generated_api.py")) is not None
    assert f.path_reason(str(repo / "generated_api.py")) is None  # the rule is lib's only
    assert f.path_reason(str(repo / "lib" / "scratch.py")) is not None


def test_the_repository_gitignore_applies_to_a_workspace_inside_it(repo: Path):
    """A workspace folder below the repository's root: git's rules are the repository's."""
    sub = repo / "app"
    f = PrivacyFilter([str(sub)])
    assert f.path_reason(str(sub / "local_settings.py")) is not None
    assert f.path_reason(str(sub / "main.py")) is None


def test_a_workspace_that_is_no_repository_uses_its_own_gitignore(tmp_path: Path):
    root = tmp_path / "plain"
    write(root, ".gitignore", "notes.py\n")
    f = PrivacyFilter([str(root)])
    assert f.path_reason(str(root / "notes.py")) is not None
    assert f.path_reason(str(root / "main.py")) is None


def test_a_changed_gitignore_takes_effect(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(privacy, "RULES_TTL_S", 0.0)
    f = PrivacyFilter([str(repo)])
    assert f.path_reason(str(repo / "app" / "draft.py")) is None
    write(repo, ".gitignore", "draft.py\n")
    assert f.path_reason(str(repo / "app" / "draft.py")) is not None


def test_deny_files_patterns(repo: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="slm_lsp.context.privacy"):
        f = PrivacyFilter([str(repo)], ["config/prod.yaml", "*.sql", "internal/", "!.env.example", "\\"])
    assert "'\\\\' is not a gitignore pattern" in caplog.text  # logged and left out, the rest apply
    assert f.deny_files == ["config/prod.yaml", "*.sql", "internal/", "!.env.example"]
    assert f.path_reason(str(repo / "config" / "prod.yaml")) == "matches remote.deny_files pattern 'config/prod.yaml'"
    assert f.path_reason(str(repo / "sub" / "config" / "prod.yaml")) is None  # anchored: a slash inside
    assert f.path_reason(str(repo / "db" / "dump.sql")) is not None
    assert f.path_reason(str(repo / "internal" / "pricing.py")) is not None
    assert f.path_reason(str(repo / ".env.example")) is None  # the user let the template through
    assert f.path_reason(str(repo / ".env")) is not None


def test_deny_files_change_at_run_time(repo: Path):
    f = PrivacyFilter([str(repo)])
    path = str(repo / "app" / "main.py")
    assert f.path_reason(path) is None
    assert f.configure(deny_files=["app/"]) is True
    assert f.path_reason(path) is not None  # the cached answer was dropped
    assert f.configure(deny_files=["app/"]) is False
    f.configure(deny_files=[])
    assert f.path_reason(path) is None


def test_paths_outside_the_workspace(tmp_path: Path, repo: Path):
    f = PrivacyFilter([str(repo)])
    elsewhere = tmp_path / "elsewhere"
    # named like secrets: private wherever they are
    assert f.path_reason(str(write(elsewhere, ".env", "A=1\n"))) is not None
    assert f.path_reason(str(write(elsewhere, "home/.ssh/known_hosts"))) is not None
    assert f.path_reason(str(write(elsewhere, "home/.aws/credentials"))) is not None
    # plain code outside any repository: not private
    assert f.path_reason(str(write(elsewhere, "script.py"))) is None
    # another repository's .gitignore applies to its files
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    write(other, ".gitignore", "private_*.py\n")
    assert f.path_reason(str(write(other, "src/private_notes.py"))) == "ignored by git (.gitignore)"
    assert f.path_reason(str(write(other, "src/public.py"))) is None
    # a relative path is taken inside the first workspace folder
    assert f.path_reason("app/local_settings.py") is not None
    assert f.path_reason("app/main.py") is None


def test_a_link_named_like_code_to_a_secret_is_private(repo: Path):
    write(repo, ".env", "TOKEN=abc\n")
    os.symlink(repo / ".env", repo / "app" / "settings_view.py")
    assert PrivacyFilter([str(repo)]).path_reason(str(repo / "app" / "settings_view.py")) is not None


def test_a_real_git_agrees_on_ignored_files(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The ignore rules as git itself reads them (.gitignore files, info/exclude, the user's
    excludes file), for the fixture's files."""
    git = subprocess.run(["git", "--version"], capture_output=True)
    if git.returncode != 0:
        pytest.skip("no git")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    write(home, ".config/git/ignore", "*.draft.py\n")
    shutil.rmtree(repo / ".git")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    write(repo, ".git/info/exclude", "scratch.py\n")
    write(repo, "lib/.gitignore", "!keep.draft.py\n")
    files = ["app/local_settings.py", "out/gen.py", "app/out/gen.py", "run.log", "keep.log", "app/main.py",
             "app/plan.draft.py", "lib/keep.draft.py", "lib/scratch.py"]
    for rel in files:
        write(repo, rel)
    f = PrivacyFilter([str(repo)])
    for rel in files:
        ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", rel]).returncode == 0
        assert (f.path_reason(str(repo / rel)) is not None) == ignored, rel


CONTENT_SECRETS = {
    "a private key block": "cert = '''\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n'''",
    "an AWS access key id": "client = boto3.client('s3', aws_access_key_id='AKIAIOSFODNN7EXAMPLE')",
    "a GitHub token": "headers = {'Authorization': 'token ghp_" + "a1B2" * 9 + "'}",
    "a GitLab token": "TOKEN_HEADER = {'PRIVATE-TOKEN': 'glpat-" + "x1y2z3" * 4 + "'}",
    "a Slack token": "slack = Client('xoxb-1234567890-abcdefghij')",
    "an OpenAI or Anthropic key": "openai.api_base = 'sk-proj-" + "Ab3" * 12 + "'",
    "a Google API key": "maps = Maps('AIza" + "SyD3" * 8 + "abc')",
    "a Stripe key": "stripe.key = 'sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc" + "'",
    "a URL with a password": "DB = 'postgres://admin:hunter2@db.internal:5432/shop'",
    "a Hugging Face token": "login(token='hf_" + "Ab1" * 11 + "')",
}


@pytest.mark.parametrize("reason", sorted(CONTENT_SECRETS))
def test_secret_content_is_found(reason: str):
    assert content_reason("import os\n\n" + CONTENT_SECRETS[reason] + "\n\ndef f():\n    pass\n") == reason


@pytest.mark.parametrize("line", [
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "export GITHUB_TOKEN=0123456789abcdef0123",
    "  password: s3cr3t-passw0rd",
    '    "api_key": "a8f5f167f44f4964e6c998dee827110c",',
    "SECRET_KEY = 'django-insecure-7h1s-1s-n0t-s4fe'",
    "self.client_secret = \"Zx81kPq02LmN\"",
    "DB_PASSWORD=hunter2hunter2  # prod",
    "const apiKey = 'f3a9c2e1b7d4a6c8e0f2'",
    "export const STRIPE_SECRET = `whsec_12ab34cd56ef`;",
    'API_TOKEN: str = "t0k3n-abcdef-123456"',
    'apiToken := "9f8e7d6c5b4a39281706"',
    "'password' => 'Sup3rS3cretPw',",
    "SECRET_KEY_BASE=8f14e45fceea167a5a36dedd4bea2543",
    'private static final String DB_PASSWORD = "Pa55w0rd!2024";',
])
def test_secret_assignments_are_found(line: str):
    assert content_reason(f"x = 1\n{line}\ny = 2\n") == "a secret assigned a value", line


@pytest.mark.parametrize("line", [
    "token = os.environ['GITHUB_TOKEN']",
    "api_key = os.getenv('API_KEY')",
    'password_field = "password"',
    "SECRET_KEY = settings.SECRET_KEY",
    "MAX_TOKENS = 100000000",
    "TOKEN_RE = re.compile(r'[A-Za-z0-9]+')",
    "def check_password(password: str) -> bool:",
    "tokens = tokenizer.encode(text, add_special_tokens=True)",
    'placeholder = "your-api-key-here"',
    "url = 'https://example.com/path?x=1'",
    "# -----BEGIN PUBLIC KEY----- is fine to share",
    "private_key_path = Path('keys') / name",
    # found in real libraries' code by an earlier version of the patterns
    '"tokenizers": "tokenizers>=0.23.1,<0.24.0",',
    "LayoutLMv3TokenizerFast = LayoutLMv3Tokenizer",
    'self.tokenizer.pad_token = "<|reserved_special_token_0|>"',
    'mask_token="<mask_2>",',
    "self.pad_token_id = config.t2u_pad_token_id",
    "Api2Token = ApiV2Token",
    '# "https://username:password@host.com:80/path?query#fragment"',
    'proxy_url="socks5h://<username>:<password>@proxy-host"',
    "# The default infer_storage_options can handle gist://username:token@id/file",
    "- 'github://org:repo@/precip/catalog.yml', where the org and repo are",
    'help="Specify a proxy in the form scheme://[user:passwd@]proxy.server:port.",',
    "        api_key=settings_v2,",
    "gist://username:TOKEN@<gist_id>/file.txt",
    "...     'smb://myuser:mypassword@myserver.com/' 'share/folder/file.csv'",
])
def test_ordinary_code_is_not_a_secret(line: str):
    assert content_reason(f"import os\n{line}\n") is None, line


def test_reason_combines_name_and_content(repo: Path):
    f = PrivacyFilter([str(repo)])
    main = str(repo / "app" / "main.py")
    assert f.reason(main, "def f():\n    return 1\n") is None
    assert f.reason(main, "KEY = '-----BEGIN OPENSSH PRIVATE KEY-----'\n") == "a private key block"
    assert f.reason("", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n") is not None  # unsaved
    assert f.reason("", "x = 1\n") is None
    assert f.private(str(repo / ".env"), "DEBUG=1\n")  # by its name, whatever it holds


def test_an_unreadable_folder_is_taken_as_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(_directory: str) -> str | None:
        raise PermissionError("denied")

    monkeypatch.setattr(privacy, "_repository_root", fail)
    assert PrivacyFilter().path_reason(str(tmp_path / "a.py")) is not None  # fails closed


# -- where prompts go ---------------------------------------------------------------------------

def remote(**values: object) -> SimpleNamespace:
    base = {"route": "local", "url": "", "kind": "openai", "model": "", "api_key_env": "SLM_LSP_REMOTE_API_KEY"}
    return SimpleNamespace(remote=SimpleNamespace(**{**base, **values}))


def test_destination_local_by_default():
    assert destination(SimpleNamespace()) == privacy.Destination(False, "on this machine only")  # no remote section
    assert destination(remote(url="https://gpu:8080")).summary == "on this machine only"  # route local
    where = destination(remote(route="remote"))
    assert not where.remote and "remote.url is empty" in where.summary


def test_destination_remote():
    where = destination(remote(route="remote", url="https://gpu.example.com:8080", kind="llama-server", model="m"))
    assert where.remote and not where.warnings
    assert where.summary.startswith("to https://gpu.example.com:8080 (llama-server, model m; route remote")
    auto = destination(remote(route="auto", url="http://127.0.0.1:8080"))
    assert auto.remote and not auto.warnings and "unsure" in auto.summary


@pytest.mark.parametrize("url,warned", [
    ("http://gpu-box:8080", True), ("http://10.0.0.5:8080", True), ("http://example.com", True),
    ("http://localhost:8080", False), ("http://127.0.0.1:8080", False), ("http://[::1]:8080", False),
    ("http://dev.localhost:1234", False), ("https://gpu-box:8080", False),
])
def test_plain_http_to_another_machine_is_warned(url: str, warned: bool):
    where = destination(remote(route="remote", url=url))
    assert any("unencrypted" in w for w in where.warnings) == warned


def test_a_password_in_the_url_is_never_shown():
    where = destination(remote(route="remote", url="https://bob:pa55word@gpu:8080/v1"))
    assert "pa55word" not in where.summary and "***@gpu:8080" in where.summary
    assert any("SLM_LSP_REMOTE_API_KEY" in w for w in where.warnings)
    assert redact("https://gpu:8080") == "https://gpu:8080"


def test_a_large_buffer_is_scanned_around_the_cursor():
    filler = "def f(x):\n    return x + 1\n\n" * 20000  # about 560 KB
    key = "AWS_KEY = 'AKIAIOSFODNN7EXAMPLE'\n"
    text = key + filler + key.replace("AWS_KEY", "OTHER")
    f = PrivacyFilter()
    assert f.reason("", text) == "an AWS access key id"  # no cursor: all of it
    middle = text.count("\n") // 2
    assert f.reason("", text, line=middle) is None  # the keys are far from the cursor
    assert f.reason("", text, line=3) == "an AWS access key id"
    assert f.reason("", text, line=text.count("\n")) == "an AWS access key id"
    part = privacy.around(text, middle, 1000)
    assert 900 < len(part) < 1100 and part.startswith(("def", "    ", "\n")) and text.find(part) > 0
    assert privacy.around("a\nb\n", 1, 1000) == "a\nb\n"


def test_the_secret_at_the_start_of_a_later_line_of_a_long_text():
    assert content_reason("x\n" * 1000 + "PASSWORD=a1b2c3d4e5\n") == "a secret assigned a value"
    assert content_reason("y = '" + "z" * 5000 + " ghp_" + "A1" * 20 + "'\n") == "a GitHub token"  # long line


def test_the_users_git_excludes_file(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    write(home, ".config/git/ignore", "*.draft.py\n")  # git's default place
    assert PrivacyFilter([str(repo)]).path_reason(str(repo / "app" / "plan.draft.py")) == "ignored by git (.gitignore)"
    write(repo, ".gitignore", "!plan.draft.py\n")  # the repository's own rules win
    assert PrivacyFilter([str(repo)]).path_reason(str(repo / "app" / "plan.draft.py")) is None
    # core.excludesFile in ~/.gitconfig names another file
    write(home, ".gitconfig", '[user]\n\tname = x\n[core]\n\texcludesFile = "~/my-ignores"\n[alias]\n\tst = status\n')
    write(home, "my-ignores", "scratch_*.py\n")
    f = PrivacyFilter([str(repo)])
    assert privacy.global_excludes_file() == str(home / "my-ignores")
    assert f.path_reason(str(repo / "app" / "scratch_1.py")) is not None
    assert f.path_reason(str(repo / "app" / "other.draft.py")) is None  # the default file is not read then

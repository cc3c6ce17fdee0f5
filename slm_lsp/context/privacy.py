"""What must never go into a prompt sent to a remote model, and where prompts go.

The context side *marks* what is private, it never drops it: the local model never leaves the
machine, so local completions keep using everything. The engine drops the private pieces (and
answers a private buffer locally) only when a request would be sent to a remote backend.

A file is private when, checked in this order:

1. its name matches a secret's name (``SECRET_FILES``: environment files, keys and
   certificates, tools' credential files, credential folders such as ``.ssh/``) or a
   ``remote.deny_files`` pattern. Both are gitignore-style patterns matched against the path
   inside its repository and inside each workspace folder that holds it (for a file in neither,
   its absolute path); the deny patterns come after the built-in ones, so ``!.env.example``
   lets a template through;
2. git ignores it: the ``.gitignore`` files of its repository (the nearest folder above it
   holding ``.git``, else the workspace folder holding it), ``.git/info/exclude`` and the
   user's excludes file (``core.excludesFile``, by default ``~/.config/git/ignore``); anything
   inside ``.git`` too;
3. its text holds something that looks like a secret (``SECRET_CONTENT``: a private key block,
   a cloud provider's key, a token of a known shape, a URL with a password, a secret-named
   variable assigned a literal with letters and digits). A piece of context (a definition, a
   snippet, a chunk of the recent-edits ring) is checked by its own text, the edited buffer by
   all of it up to ``FULL_SCAN_CHARS``, by the lines around the cursor beyond.

Nothing here opens a connection: the rules read names, ``.gitignore`` files and the text given.
The ``.gitignore`` files are read again after ``RULES_TTL_S``, so editing one takes effect
without a restart. ``destination`` describes where prompts go, for ``slm-lsp doctor`` and the
log.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit  # parsing only: no connection is made here

import pathspec

from .files import IgnoreRules

log = logging.getLogger(__name__)

SECRET_FILES: tuple[str, ...] = (
    # environment files (direnv's too): values of API keys and passwords
    ".env", ".env.*", "*.env", ".envrc",
    # private keys, certificates and key stores
    "*.pem", "*.key", "*.crt", "*.cer", "*.der", "*.p8", "*.p12", "*.pfx", "*.pkcs12", "*.jks", "*.keystore",
    "*.ppk", "*.ovpn", "*.kdbx", "*.gpg",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    # folders of credentials in a home directory
    ".ssh/", ".gnupg/", ".aws/", ".azure/", ".kube/", ".config/gcloud/", ".docker/config.json",
    # tools' credential files
    ".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass", ".my.cnf", ".git-credentials", ".htpasswd",
    ".boto", ".s3cfg", ".dockercfg",
    # files named for what they hold; Terraform variables and state carry secrets in clear
    "credentials", "credentials.*", "secrets", "secrets.*", "*.secret", "*.secrets", "client_secret*.json",
    "*.tfvars", "*.tfstate", "*.tfstate.*",
)
"""Gitignore-style patterns of files that hold secrets (a folder pattern covers all inside)."""

_SECRET_NAME = (r"[A-Za-z0-9_.$-]*(?:secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|private[_-]?key"
                r"|auth[_-]?key|token|credentials?)(?:[_-]?(?:key|value|base))*s?")
"""A name that *ends* in a secret's word (``AWS_SECRET_ACCESS_KEY``, ``githubToken``,
``db_password``, ``SECRET_KEY_BASE``); ``tokenizer``, ``pad_token_id`` or ``password_field`` do not."""
_DECLARATION = (r"(?:(?:export|const|let|var|val|final|static|private|public|protected|readonly)[ \t]+)*"
                r"(?:[A-Za-z_][\w<>\[\].]*[ \t]+)?")
"""Keywords and a type before the name: ``export const``, ``private static final String``."""
_LITERAL_CHAR = r"[^\"'`\s<>|(){}\[\],;]"
"""What a key or password is made of: no spaces, quotes, brackets or separators (``"<pad>"``,
``"[SEP]"`` or ``"tokenizers>=0.2,<0.3"`` are not secrets)."""
_LETTERS_AND_DIGITS = rf"(?={_LITERAL_CHAR}*[0-9])(?={_LITERAL_CHAR}*[A-Za-z])"
_PLACEHOLDER = r"(?i:(?:my|your)?(?:password|passwd|pass|pwd|secret|token|changeme)|x{3,}|\*+)@"
"""What documentation writes for a password in a URL (``user:password@host``, ``:TOKEN@``)."""


@dataclass(frozen=True)
class SecretPattern:
    reason: str
    anchors: tuple[str, ...]
    """Lower-case words, one of which every match holds: ``str.find`` looks for them at memory
    speed, and only the lines that hold one are matched against ``pattern`` (one regular
    expression over the whole text took 120 ms for 120 KB of code)."""
    pattern: re.Pattern[str]


SECRET_CONTENT: tuple[SecretPattern, ...] = tuple(SecretPattern(reason, anchors, re.compile(pattern)) for
                                                  reason, anchors, pattern in (
    # the END line too: a chunk cut out of the middle of a file may hold only the key's end
    ("a private key block", ("private key",), r"-----(?:BEGIN|END) (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ("an AWS access key id", ("akia", "asia", "abia", "acca"), r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("a GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("a GitLab token", ("glpat-",), r"\bglpat-[A-Za-z0-9_-]{20,}"),
    ("a Slack token", ("xox",), r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("an OpenAI or Anthropic key", ("sk-",), r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}"),
    ("a Google API key", ("aiza",), r"\bAIza[0-9A-Za-z_-]{35}"),
    ("a Stripe key", ("k_live_",), r"\b[rs]k_live_[0-9A-Za-z]{16,}"),
    ("a Hugging Face token", ("hf_",), r"\bhf_[A-Za-z0-9]{30,}"),
    # postgres://shop:hunter2@db: not a placeholder (user:password@host) nor a template (<password>)
    ("a URL with a password", ("://",),
     rf"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"\[\]<>{{}}()]+:(?!{_PLACEHOLDER})[^/\s:@'\"\[\]<>{{}}()]{{3,}}@[^\s'\"/]"),
    # AWS_SECRET_ACCESS_KEY=..., "password": "...", const apiKey = '...', api_key: str = "...": a
    # literal of 8 or more characters with letters and digits (so `token = os.environ["TOKEN"]`,
    # `password_field = "password"` or `pad_token = "<pad>"` do not count). Unquoted only as in
    # .env (NAME=value, no spaces) or YAML (name: value), ending the line: in code `x = y1` is
    # a reference.
    ("a secret assigned a value", ("secret", "passw", "pwd", "api", "access", "private", "auth", "token", "credential"),
     rf"(?im)^[ \t]*{_DECLARATION}[\"']?{_SECRET_NAME}[\"']?"
     r"(?:[ \t]*(?::[ \t]*[A-Za-z_][\w.\[\], |]*?[ \t]*)?(?::=|=>|=|:)[ \t]*"  # a type, then := => = or :
     rf"[\"'`]{_LETTERS_AND_DIGITS}{_LITERAL_CHAR}{{8,}}[\"'`]"
     rf"|(?:=|:[ \t]+){_LETTERS_AND_DIGITS}{_LITERAL_CHAR}{{8,}}[ \t]*(?:#.*)?$)"),
))
"""What a secret looks like inside a file that is not named like one. Matched line by line."""
LONG_LINE = 2000
"""Of a longer line (minified code), only the ``AROUND`` characters each side of a word found are matched."""
AROUND = 300
FULL_SCAN_CHARS = 128 * 1024
"""A buffer up to this size is scanned whole (a few ms); of a larger one, the lines around the
cursor that make up this many characters: many times what the prompt's windows take of it."""

RULES_TTL_S = 5.0
"""``.gitignore`` files, and the answers drawn from them, are read again after this long."""
MAX_CACHED_PATHS = 4096


def content_reason(text: str) -> str | None:
    """Why ``text`` looks like it holds a secret (None: it does not)."""
    if not text:
        return None
    # Lower case for the search only; non-ASCII characters become "?" so that positions match.
    lowered = (text if text.isascii() else text.encode("ascii", "replace").decode("ascii")).lower()
    for secret in SECRET_CONTENT:
        seen: set[int] = set()
        for word in secret.anchors:
            at = lowered.find(word)
            while at >= 0:
                start = lowered.rfind("\n", 0, at) + 1
                end = lowered.find("\n", at)
                end = len(text) if end < 0 else end
                if end - start > LONG_LINE:
                    start, end = max(start, at - AROUND), min(end, at + AROUND)
                if start not in seen:
                    seen.add(start)
                    if secret.pattern.search(text, start, end) is not None:
                        return secret.reason
                at = lowered.find(word, max(end, at + 1))
    return None


def around(text: str, line: int, chars: int = FULL_SCAN_CHARS) -> str:
    """Whole lines of ``text`` around line ``line``, about ``chars`` characters in all (the whole
    text when it is not longer)."""
    if len(text) <= chars:
        return text
    at, left = 0, max(line, 0)
    block = 65536
    while left > 0 and at < len(text):  # the line's offset: whole blocks counted in C, then lines
        count = text.count("\n", at, at + block)
        if count < left:
            at, left = at + block, left - count
            continue
        while left > 0:
            at = text.find("\n", at) + 1
            left -= 1
    at = min(at, len(text))
    start = max(0, at - chars // 2)
    end = min(len(text), start + chars)
    start = max(0, end - chars)
    if start > 0:
        start = text.rfind("\n", 0, start) + 1
    nl = text.find("\n", end)
    return text[start:len(text) if nl < 0 else nl]


def _repository_root(directory: str) -> str | None:
    """The nearest folder at or above ``directory`` that holds ``.git`` (a folder, or a file in a
    worktree or submodule)."""
    current = directory
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, None when it is not below it."""
    if path == root or not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return os.path.relpath(path, root).replace(os.sep, "/")


@dataclass
class _Rules:
    """The ignore rules of one repository (or workspace folder), and when they were read."""

    rules: IgnoreRules
    read_at: float = field(default_factory=time.monotonic)


class PrivacyFilter:
    """Decides what is private (see the module docstring). Thread-safe: the event loop's
    executor, the context sources and the scheduler ask at once. May read ``.gitignore`` files
    and resolve links: call it off the event loop."""

    def __init__(self, roots: Sequence[str] = (), deny_files: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        """Guards the state below for the readers (held briefly, never while reading files)."""
        self._configure_lock = threading.Lock()
        self._roots: list[str] = []
        self._deny: list[str] = []
        self._names: pathspec.GitIgnoreSpec = pathspec.GitIgnoreSpec.from_lines(SECRET_FILES)
        self._rules: dict[str, _Rules] = {}
        self._paths: dict[str, tuple[float, str | None]] = {}
        self._generation = 0
        """Bumped by ``configure``: an answer worked out under older settings is not cached."""
        self.configure(roots, deny_files)

    @property
    def deny_files(self) -> list[str]:
        return list(self._deny)

    @property
    def generation(self) -> int:
        """Changes whenever ``configure`` changes what is private."""
        return self._generation

    def configure(self, roots: Sequence[str] | None = None, deny_files: Sequence[str] | None = None) -> bool:
        """Set the workspace folders and the ``remote.deny_files`` patterns (None: unchanged).
        A pattern that is not a valid gitignore pattern is logged and left out. True when
        something changed (the pieces marked before may be marked wrongly now)."""
        with self._configure_lock:  # two changes applied at once must not undo each other
            new_roots = self._roots if roots is None else [os.path.realpath(r) for r in roots]
            new_deny = self._deny if deny_files is None else [p for p in deny_files if _valid_pattern(p)]
            if new_roots == self._roots and new_deny == self._deny:
                return False
            names = pathspec.GitIgnoreSpec.from_lines([*SECRET_FILES, *new_deny])
            with self._lock:
                self._roots, self._deny, self._names = new_roots, new_deny, names
                self._paths.clear()
                self._generation += 1
            return True

    def reason(self, path: str, text: str | None = None, line: int | None = None) -> str | None:
        """Why the file at ``path`` (or a piece of it whose text is ``text``) must not go into a
        remote prompt; None when it may. ``path`` may be "" (an unsaved buffer: its text only).
        With ``line`` (a buffer's cursor), a large text is scanned ``around`` that line."""
        if path and (why := self.path_reason(path)) is not None:
            return why
        if not text:
            return None
        return content_reason(text if line is None else around(text, line))

    def private(self, path: str, text: str | None = None) -> bool:
        return self.reason(path, text) is not None

    def path_reason(self, path: str) -> str | None:
        """Why the file at ``path`` is private by its name or git's ignore rules (None: it is not).
        A relative path is taken relative to the first workspace folder."""
        now = time.monotonic()
        with self._lock:
            hit, generation = self._paths.get(path), self._generation
        if hit is not None and now - hit[0] < RULES_TTL_S:
            return hit[1]
        try:
            reason = self._path_reason(path)
        except Exception as exc:  # an unreadable folder, a link loop: private, to be safe
            log.warning("could not tell whether %s is private (%s): taken as private", path, exc)
            reason = f"its privacy could not be checked: {exc}"
        with self._lock:
            if generation == self._generation:
                if len(self._paths) >= MAX_CACHED_PATHS:
                    self._paths.clear()
                self._paths[path] = (now, reason)
        return reason

    def _path_reason(self, path: str) -> str | None:
        with self._lock:  # the patterns and the spec made of them, as one pair
            roots, names, deny = list(self._roots), self._names, list(self._deny)
        if not os.path.isabs(path) and roots:
            path = os.path.join(roots[0], path)
        absolute = os.path.abspath(path)
        real = os.path.realpath(absolute)
        for candidate in dict.fromkeys((absolute, real)):  # a link named like code may point at a key
            repo = _repository_root(os.path.dirname(candidate))
            holders = [r for r in roots if _inside(candidate, r) is not None]
            bases = dict.fromkeys([*([repo] if repo else []), *holders])
            rels = [rel for base in bases if (rel := _inside(candidate, base)) is not None]
            # Outside every repository and workspace folder: the absolute path, so patterns
            # without a slash (names) and folder names (.ssh/) still match.
            for rel in rels or [candidate.lstrip("/").replace(os.sep, "/")]:
                result = names.check_file(rel)
                if result.include and result.index is not None:
                    n = len(SECRET_FILES)
                    if result.index < n:
                        return f"named like a secret ({SECRET_FILES[result.index]})"
                    return f"matches remote.deny_files pattern {deny[result.index - n]!r}"
            base = repo or (max(holders, key=len) if holders else None)
            if base is not None:
                rel = _inside(candidate, base)
                if rel is not None and self._ignore_rules(base).ignored(rel):
                    return f"ignored by git ({'.git' if rel.split('/')[0] == '.git' else '.gitignore'})"
        return None

    def _ignore_rules(self, base: str) -> IgnoreRules:
        now = time.monotonic()
        with self._lock:
            held = self._rules.get(base)
            if held is not None and now - held.read_at < RULES_TTL_S:
                return held.rules
        # Lowest precedence first, as git reads them: the user's excludes file, the repository's
        # info/exclude, then (inside IgnoreRules) the .gitignore files.
        user = global_excludes_file()
        extra = (_read_lines(user) if user else []) + _read_lines(os.path.join(base, ".git", "info", "exclude"))
        # Vendored folders are not private (public code); only what git itself ignores is.
        rules = IgnoreRules(base, extra, vendored=False)
        with self._lock:
            self._rules[base] = _Rules(rules, now)
        return rules


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9.-]+)")
_EXCLUDES_FILE = re.compile(r"^\s*excludesfile\s*=\s*(.*?)\s*$", re.I)


def global_excludes_file() -> str | None:
    """Git's user-wide excludes file: ``core.excludesFile`` of ``~/.gitconfig`` (or of
    ``$XDG_CONFIG_HOME/git/config``), else git's default ``$XDG_CONFIG_HOME/git/ignore``. Read
    from the files, no ``git`` process; ``include`` directives are not followed."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    for config in (os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config")):  # the first wins
        section = ""
        value = None
        for line in _read_lines(config):
            if (m := _SECTION.match(line)) is not None:
                section = m.group(1).lower()
            elif section == "core" and (m := _EXCLUDES_FILE.match(line)) is not None:
                value = m.group(1).strip('"')  # the last one in a file wins, as in git
        if value:
            return os.path.expanduser(value)
    return os.path.join(xdg, "git", "ignore")


def _valid_pattern(pattern: Any) -> bool:
    if not isinstance(pattern, str) or not pattern.strip():
        return False
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:
        log.warning("remote.deny_files: %r is not a gitignore pattern (%s): left out", pattern, exc)
        return False
    return True


# -- where prompts go -------------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    """Where completion prompts go with the current settings."""

    remote: bool
    """Whether a prompt may leave this machine (a remote route and a URL)."""
    summary: str
    """One line: "on this machine only", or "to URL (kind...; route...)"."""
    warnings: tuple[str, ...] = ()


def _setting(section: Any, name: str, default: Any) -> Any:
    value = getattr(section, name, default) if section is not None else default
    return default if value is None else value


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def redact(url: str) -> str:
    """``url`` without a password in it (what a log or doctor may show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unreadable URL>"
    if parts.password is None and parts.username is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"***@{netloc}").geturl()


def destination(config: Any) -> Destination:
    """Where prompts go under ``config`` (the whole config tree; read defensively: a tree
    without a ``remote`` section sends nothing anywhere)."""
    remote = getattr(config, "remote", None)
    route = str(_setting(remote, "route", "local"))
    url = str(_setting(remote, "url", "")).strip()
    if route == "local" or not url:
        why = "" if route == "local" else f" (route {route}, but remote.url is empty)"
        return Destination(False, f"on this machine only{why}")
    kind = str(_setting(remote, "kind", "openai"))
    model = str(_setting(remote, "model", ""))
    shown = redact(url)
    which = "every completion" if route == "remote" else "the completions the local model is unsure of"
    summary = (f"to {shown} ({kind}{', model ' + model if model else ''}; route {route}: {which}); "
               "private files (secrets, .gitignored, remote.deny_files) stay on this machine")
    warnings: list[str] = []
    try:
        parts = urlsplit(url)
        scheme, host, password = parts.scheme.lower(), parts.hostname or "", parts.password
    except ValueError:
        scheme, host, password = "", "", None
    if scheme == "http" and not is_loopback(host):
        warnings.append(f"{shown} is plain http:// to another machine: your code crosses the network "
                        "unencrypted (use https://, or an SSH tunnel to a localhost port)")
    elif scheme not in ("http", "https"):
        warnings.append(f"{shown} is not an http:// or https:// URL")
    if password:
        warnings.append("remote.url holds a password: put the key in the environment variable "
                        f"{_setting(remote, 'api_key_env', 'SLM_LSP_REMOTE_API_KEY')} instead")
    return Destination(True, summary, tuple(warnings))

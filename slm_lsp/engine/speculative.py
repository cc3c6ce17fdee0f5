"""Speculative decoding: cheap drafts that the model checks in one batch.

Generating a token costs a full pass over the weights; checking k proposed tokens costs one
pass over a batch of k + 1, which on a memory-bound machine is not much more. The runner
(``LlamaRunner.generate``) asks a drafter for up to k tokens after the token it just chose,
decodes that token and the draft in one batch with logits at every position, and keeps the
longest prefix of the draft that matches its own greedy choice at each position, plus its own
next token. The answer is the one plain greedy decoding gives, token for token; only the
number of passes changes. Two drafters:

* ``PromptLookup`` (prompt lookup / n-gram drafting): code repeats itself, and the line being
  written is often a near-copy of one in the file or in the repo context. The last n generated
  tokens (n from ``ngram_max`` down to ``ngram_min``) are looked up in the prompt and what was
  generated, and the tokens that followed their latest occurrence are the draft. Costs nothing
  when nothing matches (no draft: a plain one-token step).
* ``DraftModel``: a second, smaller model with the same vocabulary (Qwen2.5-Coder-0.5B for the
  1.5B or 3B) proposes tokens greedily. Its KV cache is laid out like the runner's (the same
  prompt, reused and shifted the same way) and kept in step with the accepted tokens.

llama.cpp's ``examples/speculative`` and ``lookup`` do the same on the C++ side; this is the
in-process version for the runner's own KV layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .model import LlamaRunner
    from .prompt import Prompt

MODES = ("off", "lookup", "draft")
VOCAB_SIZE_SLACK = 128
"""Vocabularies may differ in size by this many ids (padding rows of the embedding) as long as
every id both have means the same token (llama.cpp's rule for draft models, too)."""


@dataclass(frozen=True)
class Speculation:
    """How the runner drafts (``speculative`` in the config)."""

    mode: str = "off"
    """off, lookup or draft."""
    draft_tokens: int = 4
    """Most tokens proposed for one batch."""
    ngram_min: int = 2
    ngram_max: int = 4
    draft_p_min: float = 0.5
    """The draft model stops proposing once its own top token is less likely than this."""
    line_cut: bool = True
    """Drafts end with their first line break."""
    adaptive: bool = True
    """Skip drafts while they cost more than they save (``DraftBudget``)."""

    @classmethod
    def of(cls, settings: Any) -> Speculation:
        """From the config's ``speculative`` section (``config.SpeculativeConfig``)."""
        return cls(settings.mode, settings.draft_tokens, settings.ngram_min, settings.ngram_max,
                   settings.draft_p_min)


class DraftBudget:
    """Whether drafting pays on this machine: what a drafted token costs (drafting it and checking
    it in the batch, beyond the plain step the batch replaces) against what it saves when it is
    accepted (a plain step), from running averages of the runner's own timings. Where it does not
    pay (one busy CPU thread: checking a token costs most of a plain step), drafts are skipped
    but for one in ``PROBE_EVERY`` steps, which keeps the averages current."""

    WEIGHT = 0.2
    PROBE_EVERY = 8

    def __init__(self) -> None:
        self.step_ms: float | None = None
        """A plain one-token step."""
        self.token_ms: float | None = None
        """One drafted token: its share of the drafting and of the batch beyond a plain step."""
        self.accept = 0.5
        """The share of drafted tokens accepted."""
        self._skipped = 0

    def worth_it(self) -> bool:
        if self.step_ms is None or self.token_ms is None or self.accept * self.step_ms >= self.token_ms:
            return True
        self._skipped += 1
        if self._skipped >= self.PROBE_EVERY:
            self._skipped = 0
            return True
        return False

    @staticmethod
    def _average(old: float | None, new: float, weight: float) -> float:
        return new if old is None else (1 - weight) * old + weight * new

    def plain_step(self, ms: float) -> None:
        self.step_ms = self._average(self.step_ms, ms, self.WEIGHT)

    def checked(self, ms: float, drafted: int, accepted: int) -> None:
        """A draft of ``drafted`` tokens took ``ms`` to draft and check; ``accepted`` were right."""
        if self.step_ms is None or drafted <= 0:
            return
        self.token_ms = self._average(self.token_ms, max(0.0, ms - self.step_ms) / drafted, self.WEIGHT)
        self.accept = self._average(self.accept, accepted / drafted, min(1.0, self.WEIGHT * drafted / 2))


class Drafter(Protocol):
    def draft(self, generated: list[int], k: int, cancelled: Callable[[], bool]) -> list[int]:
        """Up to ``k`` tokens likely to follow the prompt and ``generated`` (the runner's tokens
        so far, the last one not yet decoded by it)."""
        ...


class PromptLookup:
    """Drafts by copying what followed the latest earlier occurrence of the last n tokens."""

    def __init__(self, prompt_tokens: list[int], ngram_min: int = 2, ngram_max: int = 4,
                 max_new: int = 4096) -> None:
        self.ngram_min, self.ngram_max = max(1, ngram_min), max(1, ngram_min, ngram_max)
        self._history = np.empty(len(prompt_tokens) + max_new + 1, dtype=np.int64)
        self._history[:len(prompt_tokens)] = prompt_tokens
        self._n_prompt = self._n = len(prompt_tokens)

    def _sync(self, generated: list[int]) -> None:
        # Within one answer the generated tokens only grow: copy the new ones.
        have = self._n - self._n_prompt
        new = generated[have:]
        room = len(self._history) - self._n
        if len(new) > room:  # more than the caller said: grow
            self._history = np.concatenate([self._history, np.empty(len(new) - room + 64, dtype=np.int64)])
        self._history[self._n:self._n + len(new)] = new
        self._n += len(new)

    def draft(self, generated: list[int], k: int, cancelled: Callable[[], bool] = lambda: False) -> list[int]:
        self._sync(generated)
        h, n_all = self._history, self._n
        for n in range(min(self.ngram_max, n_all - 1), self.ngram_min - 1, -1):
            tail = h[n_all - n:n_all]
            span = n_all - n  # start positions j < span: the n-gram at j is followed by h[j + n]
            match = h[0:span] == tail[0]
            for t in range(1, n):
                match &= h[t:span + t] == tail[t]
            hits = np.flatnonzero(match)
            if len(hits):
                start = int(hits[-1]) + n  # the latest occurrence: code nearby repeats most
                return [int(t) for t in h[start:min(start + k, n_all)]]
        return []


class DraftModel:
    """A smaller model with the same vocabulary, proposing its greedy continuation.

    Its sequence ``SEQ_GEN`` holds the prompt and then ``self._tokens`` (the runner's tokens it
    has decoded); before each draft it drops what the runner rejected and decodes what the runner
    accepted since, so its cache always matches the runner's answer so far."""

    def __init__(self, runner: LlamaRunner, p_min: float = 0.5, n_vocab: int | None = None) -> None:
        self.runner = runner
        self.n_vocab = n_vocab or runner.n_vocab
        """The verifying model's vocabulary size: no draft token at or past it."""
        self.log_p_min = math.log(p_min) if p_min > 0 else -math.inf
        self._tokens: list[int] = []
        self._base = 0

    def start(self, prompt: Prompt, cancelled: Callable[[], bool]) -> None:
        """Bring the draft model's cache to ``prompt`` (reusing what it can, like the runner)."""
        self.runner._prepare(prompt, cancelled)
        self._tokens, self._base = [], len(prompt.tokens)

    def draft(self, generated: list[int], k: int, cancelled: Callable[[], bool]) -> list[int]:
        from .model import SEQ_GEN, _logprob

        r = self.runner
        keep = 0
        while keep < min(len(self._tokens), len(generated) - 1) and self._tokens[keep] == generated[keep]:
            keep += 1  # the last generated token is never decoded here yet: its logits are needed
        if keep < len(self._tokens):
            r._seq_rm(SEQ_GEN, self._base + keep, -1)
            del self._tokens[keep:]
        k = min(k, r.n_ctx - self._base - len(generated) - 1)
        if k <= 0:
            return []
        logits = r._decode(generated[keep:], self._base + keep, SEQ_GEN, cancelled)
        self._tokens.extend(generated[keep:])
        out: list[int] = []
        while logits is not None:
            tok = int(np.argmax(logits))
            if tok >= self.n_vocab or _logprob(logits, tok) < self.log_p_min:
                break  # (an id past the model's vocabulary: one of the draft's padding rows)
            out.append(tok)
            if len(out) >= k or r.is_eog(tok):
                break
            logits = r._decode([tok], self._base + len(self._tokens), SEQ_GEN, cancelled)
            self._tokens.append(tok)
        return out


def check_same_vocab(target: LlamaRunner, draft: LlamaRunner) -> None:
    """Raise ``ModelLoadError`` unless ``draft`` tokenizes like ``target`` (same ids, same texts)."""
    from .model import ModelLoadError

    nt, nd = target.n_vocab, draft.n_vocab
    if abs(nt - nd) > VOCAB_SIZE_SLACK:
        raise ModelLoadError(f"the draft model {draft.path.name} has another vocabulary ({nd} tokens) than "
                             f"{target.path.name} ({nt}): a draft model must share the model's tokenizer")
    for i in range(min(nt, nd)):
        if target.token_text(i) != draft.token_text(i):
            raise ModelLoadError(
                f"the draft model {draft.path.name} has another vocabulary than {target.path.name} (token {i} is "
                f"{draft.token_text(i)!r}, not {target.token_text(i)!r}): a draft model must share the model's "
                "tokenizer")

"""The in-process model: load a GGUF with llama.cpp, evaluate prompts with KV reuse, generate.

Only one thread may call a ``LlamaRunner`` (the engine's worker owns it).

KV cache layout (one unified cache, sequences sharing cells):

* seq 0 (head): the prompt head at positions ``[0, H)``;
* seq 1 (near): the head cells plus the near suffix (rest of the line, next lines);
* seq 3 (far): the far suffix at ``[H+N, H+N+F)``;
* seq 2 (gen): near + far + the tail (``<fim_middle>``) + generated tokens.

On a new request the head is reused up to its longest common prefix with the last one, the
near suffix is evaluated again (it sits next to the cursor, and its keys depend strongly on
what was just typed), and the far suffix, which typing pushes to later positions, is moved
with a position shift (``llama_memory_seq_add``; llama.cpp re-applies RoPE) instead of being
evaluated again. llama.cpp requires each sequence's positions to grow by one per decoded token;
keeping the parts in separate sequences lets each grow only at its end. The far cells were
computed while the head was older; ``refresh_after`` bounds how many changed tokens they may
lag behind before they are evaluated afresh.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fim import FimTemplate, detect_template
from .modelfile import ModelFileError, ModelLoadError, check_adapter, read_gguf
from .next_edit import trained_for_next_edit
from .prompt import Prompt
from .speculative import DraftBudget, Drafter, DraftModel, PromptLookup, Speculation, check_same_vocab

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
ADAPTER_TEMPLATE = "template.json"
"""File beside a LoRA adapter naming the FIM template it was trained with (``slm-lsp finetune``)."""
PROMPT_BATCH = 64  # tokens per decode call: small enough to notice a cancel quickly
SEQ_HEAD, SEQ_NEAR, SEQ_GEN, SEQ_FAR, SEQ_FRESH = 0, 1, 2, 3, 4


__all__ = ["Generation", "KvState", "LlamaRunner", "LlamaVocab", "ModelLoadError", "check_model_file",
           "gpu_offload_supported"]


class Cancelled(Exception):
    pass


@dataclass
class Generation:
    text: str
    """Raw generated text (before shaping, but cut where ``stop_at`` said)."""
    n_generated: int
    n_evaluated: int
    """Prompt tokens evaluated for this request."""
    n_reused: int
    """Prompt tokens whose KV cells were reused (prefix match + shifted suffix)."""
    prompt_ms: float
    gen_ms: float
    stop_reason: str
    """eog (end of generation token), stop (shaping said done), length, time or cancelled."""
    logprobs: list[float] = field(default_factory=list)
    """Log-probability of each token chosen (the end-of-generation token too, when it ended the
    answer): how sure the model was (the router's confidence signal). Empty from a server."""
    backend: str = "local"
    """Who generated it: ``local`` or ``remote``."""
    n_drafted: int = 0
    """Speculative decoding: tokens proposed by the drafter (``speculative``) and checked."""
    n_accepted: int = 0
    """Of those, the tokens the model agreed with (each saved one decoding pass)."""
    draft_prompt_ms: float = 0.0
    """Part of ``prompt_ms`` the draft model spent on the prompt (0 without one)."""


@dataclass
class KvState:
    """A document's prompt cells copied out of the context (``LlamaRunner.save_state``), and the
    bookkeeping that says which tokens they hold: put back, the next request for that document
    reuses them as if it had never left."""

    head: list[int]
    near: list[int]
    far: list[int]
    far_pos: int
    drift: int
    near_cells: bytes
    """llama.cpp's sequence state of the head and near suffix (``llama_state_seq_get_data``)."""
    far_cells: bytes

    @property
    def nbytes(self) -> int:
        return len(self.near_cells) + len(self.far_cells)


_backend_ready = False


def _llama():
    global _backend_ready
    import llama_cpp
    import llama_cpp._internals as internals

    if not _backend_ready:
        # llama_cpp.Llama does this once per process; without it a CUDA build crashed (SIGSEGV)
        # inside llama_model_load_from_file on an H100 while CPU builds did not mind.
        llama_cpp.llama_backend_init()
        _backend_ready = True
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp, internals


def gpu_offload_supported() -> bool:
    llama_cpp, _ = _llama()
    return bool(llama_cpp.llama_supports_gpu_offload())


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def check_model_file(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    with p.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"not a GGUF file (bad magic bytes): {p}")
    return p


def _logprob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], computed stably (about 0.1 ms for a 150k vocabulary)."""
    top = float(np.max(logits))
    return float(logits[token]) - top - float(np.log(np.sum(np.exp(logits - top))))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class VocabMethods:
    """Tokenizer calls shared by the runner and ``LlamaVocab`` (they need ``_model``, ``_vocab``
    and ``_llama_cpp``). llama.cpp's tokenizer only reads the vocabulary: safe beside decoding."""

    _model: Any
    _vocab: Any
    _llama_cpp: Any

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def token_text(self, token: int) -> str:
        return self._model.token_get_text(token)

    def _special_or_none(self, text: str) -> int | None:
        if not text:
            return None
        ids = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    def _stop_ids(self, template: FimTemplate) -> set[int]:
        return {t for t in (self._special_or_none(s) for s in template.stop) if t is not None}

    def is_special_token(self, text: str) -> bool:
        return self._special_or_none(text) is not None

    def special(self, text: str) -> int:
        tid = self._special_or_none(text)
        if tid is None:
            raise KeyError(f"the model has no single token {text!r}")
        return tid

    def detokenize(self, tokens: list[int]) -> str:
        return self._model.detokenize(tokens).decode("utf-8", errors="replace")

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:  # a longer piece: retry with the size llama.cpp asked for
            buf = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:max(n, 0)]

    def load_template(self, file: Path) -> FimTemplate:
        """A FIM template from a ``template.json`` (``slm-lsp finetune`` writes one beside an
        adapter that brought FIM tokens of its own), checked against this vocabulary."""
        try:
            template = FimTemplate.load(file)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"unreadable FIM template {file}: {exc}") from exc
        missing = [t for t in (template.prefix, template.suffix, template.middle, template.repo_name,
                               template.file_sep) if t and not self.is_special_token(t)]
        if missing:
            raise ModelLoadError(f"{file}: the model has no single token for {', '.join(missing)} (wrong base model?)")
        return template

    def render(self, tokens: list[int]) -> str:
        """The text of ``tokens`` with special tokens written out (``<|fim_prefix|>``): a prompt
        as a server that tokenizes it again reads it."""
        return b"".join(self.piece(t, special=True) for t in tokens).decode("utf-8", errors="replace")


class LlamaVocab(VocabMethods):
    """A GGUF model's vocabulary without its weights (llama.cpp's ``vocab_only``): it tokenizes
    and lays out prompts for a remote server. It belongs to whoever builds those prompts, so no
    llama.cpp object is shared with the worker's runner (which may be swapped or closed)."""

    def __init__(self, path: str, template_file: str = "") -> None:
        llama_cpp, internals = _llama()
        self._llama_cpp = llama_cpp
        self.path = check_model_file(path)
        mparams = llama_cpp.llama_model_default_params()
        mparams.vocab_only = True
        mparams.n_gpu_layers = 0
        try:
            self._model = internals.LlamaModel(path_model=str(self.path), params=mparams, verbose=True)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not read the vocabulary of {self.path} ({exc})") from exc
        self._vocab = self._model.vocab
        self.metadata = self._model.metadata()
        self.template = detect_template(self.metadata, self.token_text, self.is_special_token)
        if template_file:
            try:
                self.template = self.load_template(Path(template_file).expanduser())
            except ModelLoadError:
                self._model.close()
                raise
        self.bos = [self._model.token_bos()] if self._model.add_bos_token() and self._model.token_bos() >= 0 else []

    @property
    def name(self) -> str:
        return self.metadata.get("general.name") or self.path.stem

    def close(self) -> None:
        self._model.close()


class LlamaRunner(VocabMethods):
    def __init__(self, path: str, *, n_gpu_layers: int = -1, threads: int = 0, n_ctx: int = 4096,
                 kv_shift: bool = True, refresh_after: int = 512, template: FimTemplate | None = None,
                 progress: Callable[[float], None] | None = None) -> None:
        llama_cpp, internals = _llama()
        self._llama_cpp = llama_cpp
        self.path = check_model_file(path)
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        self.n_gpu_layers = (999 if self.gpu_offload else 0) if n_gpu_layers < 0 else n_gpu_layers
        self.threads = threads or default_threads()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        if hasattr(mparams, "load_mode"):
            # The default (AUTO) lets the build pick a loader per device; mmap is what llama_cpp.Llama
            # asks for and what keeps a CPU model's pages shared and lazily read.
            mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        if progress is not None:
            def on_progress(fraction: float, _user: object) -> bool:
                try:
                    progress(float(fraction))
                except Exception:  # reporting must never abort a load
                    log.debug("progress callback failed", exc_info=True)
                return True
            # Kept on self: llama.cpp calls it while loading and ctypes must not free it first.
            self._progress_cb = llama_cpp.llama_progress_callback(on_progress)
            mparams.progress_callback = self._progress_cb
        try:
            # verbose=True only stops llama-cpp-python from redirecting fd 1/2 while loading,
            # which would swallow LSP messages written by other threads; logs stay filtered.
            self._model = internals.LlamaModel(path_model=str(self.path), params=mparams, verbose=True)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {self.path}: corrupt or unsupported model ({exc})") from exc
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = max(PROMPT_BATCH, 512)
        cparams.n_ubatch = 512
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        cparams.n_seq_max = 5
        cparams.kv_unified = True  # the three sequences share cells (seq_cp must not copy data)
        try:
            self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=True)
        except ValueError as exc:
            self._model.close()
            raise ModelLoadError(f"llama.cpp could not create a context of {n_ctx} tokens: {exc}") from exc
        self.n_ctx = self._ctx.n_ctx()
        self._mem = self._ctx.memory
        self.kv_shift = kv_shift and bool(llama_cpp.llama_memory_can_shift(self._mem))
        self.refresh_after = refresh_after
        self._vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        self._batch = internals.LlamaBatch(n_tokens=max(PROMPT_BATCH, 1), embd=0, n_seq_max=1, verbose=True)
        self.metadata = self._model.metadata()
        self.base_template = template or detect_template(self.metadata, self.token_text, self.is_special_token)
        """The template of the model alone; an adapter may bring its own (``template.json``)."""
        self.template = self.base_template
        self.bos = [self._model.token_bos()] if self._model.add_bos_token() and self._model.token_bos() >= 0 else []
        self.stop_ids = self._stop_ids(self.template)
        self._head: list[int] = []
        self._near: list[int] = []
        self._far: list[int] = []
        self._far_pos = 0
        self._drift = 0
        self.refreshed = False
        """Whether the last prompt evaluated its far suffix afresh (``refresh_after`` reached)."""
        self._fresh = 0
        """Leading far tokens that ``refresh_far`` evaluated afresh into ``SEQ_FRESH`` (at the far
        suffix's positions, after the head and near cells); their drift is ``_fresh_drift``."""
        self._fresh_drift = 0
        self._adapter = None
        self.adapter_path: str | None = None
        self.next_edit_prompt = False
        """The adapter was trained for next edits (``"next_edit": true`` in its ``template.json``):
        next-edit requests send ``engine.next_edit.render_prompt`` raw, not the chat prompt."""
        self.speculation = Speculation()
        """How ``generate`` drafts tokens to verify in one batch (off: one token per decode)."""
        self.draft: LlamaRunner | None = None
        """The draft model (``speculation.mode`` draft), owned by this runner."""
        self.draft_budgets: dict[str, DraftBudget] = {}
        """Per speculation mode: whether its drafts pay here (timings of past answers)."""

    def is_eog(self, token: int) -> bool:
        """The answer ends here: an end-of-generation token, a stop token of the template, or any
        other control token. No control token is code; a FIM model that writes one of its own
        markers has finished its middle (Qwen2.5-Coder-1.5B wrote the right line, then
        ``<|fim_middle|>``, then the line again: shown as one line, the answer was wrong)."""
        return (bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token)) or token in self.stop_ids
                or bool(self._llama_cpp.llama_vocab_is_control(self._vocab, token)))

    @property
    def name(self) -> str:
        return self.metadata.get("general.name") or self.path.stem

    # -- adapters ---------------------------------------------------------------------------
    def adapter_template(self, path: str) -> FimTemplate:
        """The FIM template an adapter was trained with: ``template.json`` beside it (written by
        ``slm-lsp finetune``), else the model's own."""
        file = Path(path).expanduser().with_name(ADAPTER_TEMPLATE)
        if not file.is_file():
            return self.base_template
        return self.load_template(file)

    def set_adapter(self, path: str | None, scale: float = 1.0) -> None:
        """Apply a GGUF LoRA adapter (None removes it) and the FIM template it was trained with
        (``template.json`` beside it, if any). The KV cache is cleared: its cells were computed
        with other weights."""
        lc = self._llama_cpp
        new = None
        template = self.base_template
        if path:
            check_model_file(path)
            # llama.cpp accepts an adapter that does not fit the model and crashes in llama_decode.
            try:
                base = read_gguf(self.path)
            except ModelFileError as exc:
                raise ModelLoadError(f"cannot check adapters against this model: {exc}") from exc
            check_adapter(path, base)
            template = self.adapter_template(path)
            new = lc.llama_adapter_lora_init(self._model.model, str(path).encode("utf-8"))
            if new is None:
                raise ModelLoadError(f"llama.cpp could not load the LoRA adapter {path} (wrong base model?)")
            adapters = (lc.llama_adapter_lora_p_ctypes * 1)(new)
            scales = (ctypes.c_float * 1)(scale)
            if lc.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales):
                lc.llama_adapter_lora_free(new)
                raise ModelLoadError(f"llama.cpp could not apply the LoRA adapter {path}")
        else:
            lc.llama_set_adapters_lora(self._ctx.ctx, None, 0, None)
        if self._adapter is not None:
            lc.llama_adapter_lora_free(self._adapter)
        self._adapter, self.adapter_path = new, (str(path) if path else None)
        self.template, self.stop_ids = template, self._stop_ids(template)
        self.next_edit_prompt = bool(path) and trained_for_next_edit(
            Path(str(path)).expanduser().with_name(ADAPTER_TEMPLATE))
        self.reset_cache()

    def set_draft(self, draft: LlamaRunner | None) -> None:
        """Take ``draft`` as the draft model (None: none); it must share this model's vocabulary
        (``ModelLoadError`` otherwise, and ``draft`` stays the caller's). The old one is closed."""
        if draft is not None:
            check_same_vocab(self, draft)
        old, self.draft = self.draft, draft
        if old is not None:
            old.close()

    # -- KV cache ---------------------------------------------------------------------------
    def reset_cache(self) -> None:
        self._llama_cpp.llama_memory_clear(self._mem, True)
        self._head, self._near, self._far, self._far_pos, self._drift = [], [], [], 0, 0
        self._fresh = self._fresh_drift = 0
        if self.draft is not None:
            self.draft.reset_cache()

    def _seq_rm(self, seq: int, p0: int, p1: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self._mem, seq, p0, p1)

    def _decode(self, tokens: list[int], pos: int, seq: int, cancelled: Callable[[], bool],
                done: Callable[[int], None] | None = None, batch: int = PROMPT_BATCH) -> np.ndarray | None:
        """Evaluate ``tokens`` at positions ``pos...`` in ``seq``; logits of the last token."""
        logits = None
        b = self._batch.batch
        for start in range(0, len(tokens), batch):
            if cancelled():
                raise Cancelled()
            part = tokens[start:start + batch]
            b.n_tokens = len(part)
            for i, tok in enumerate(part):
                b.token[i] = tok
                b.pos[i] = pos + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = False
            b.logits[len(part) - 1] = True
            rc = self._llama_cpp.llama_decode(self._ctx.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}); the context of {self.n_ctx} tokens may be full")
            if done is not None:
                done(len(part))
            ptr = self._llama_cpp.llama_get_logits_ith(self._ctx.ctx, len(part) - 1)
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return logits

    def _decode_all(self, tokens: list[int], pos: int, seq: int, cancelled: Callable[[], bool]) -> np.ndarray:
        """Evaluate ``tokens`` (at most one batch) at ``pos...`` in ``seq``; the logits of every
        one of them, a ``(len(tokens), n_vocab)`` view valid until the next decode."""
        if cancelled():
            raise Cancelled()
        b = self._batch.batch
        assert 0 < len(tokens) <= PROMPT_BATCH
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = True
        rc = self._llama_cpp.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}); the context of {self.n_ctx} tokens may be full")
        ptr = self._llama_cpp.llama_get_logits(self._ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(len(tokens), self.n_vocab))

    def _prepare(self, prompt: Prompt, cancelled: Callable[[], bool],
                 batch: int = PROMPT_BATCH) -> tuple[np.ndarray, int, int]:
        """Bring the KV cache to ``prompt``; return (logits of its last token, evaluated, reused).
        ``batch``: prompt tokens per decode call (between two looks at ``cancelled``)."""
        head, near, far, tail = prompt.head, prompt.near, prompt.far, prompt.tail
        if len(prompt.tokens) + 8 > self.n_ctx:
            raise RuntimeError(f"prompt of {len(prompt.tokens)} tokens does not fit the context ({self.n_ctx})")
        assert tail or not (near or far), "a prompt with a suffix ends with a tail token"
        lc, mem = self._llama_cpp, self._mem
        self._seq_rm(SEQ_GEN, -1, -1)
        old_h, old_far_pos = len(self._head), self._far_pos
        c = _common_prefix(self._head, head)
        if not tail:
            c = min(c, len(head) - 1)  # its logits are needed
        head_same = c == old_h == len(head)
        cn = _common_prefix(self._near, near) if head_same else 0
        near_same = head_same and cn == len(self._near) == len(near)
        kf = _common_prefix(self._far, far) if self.kv_shift or near_same else 0
        changed = 0 if near_same else (
            (old_h - c) + (len(head) - c) + (len(self._near) - cn) + (len(near) - cn))
        drift = self._drift + changed
        fresh, fresh_drift = min(self._fresh, kf), self._fresh_drift + changed
        self.refreshed = drift > self.refresh_after and bool(far)
        if drift > self.refresh_after:
            kf = fresh if fresh_drift <= self.refresh_after else 0  # the cells refresh_far redid may stay
        use_fresh = 0 < kf <= fresh  # the kept far cells can all be refreshed ones: take those
        far_pos = len(head) + len(near)
        # Drop what will not be reused, then move the kept far cells to their new place.
        self._seq_rm(SEQ_HEAD, c, -1)
        self._seq_rm(SEQ_NEAR, c + cn, -1)
        self._seq_rm(SEQ_FAR, 0, old_far_pos)
        self._seq_rm(SEQ_FRESH, 0, old_far_pos)
        self._seq_rm(SEQ_FRESH, old_far_pos + (kf if use_fresh else fresh), -1)
        if use_fresh:
            self._seq_rm(SEQ_FAR, -1, -1)
            lc.llama_memory_seq_cp(mem, SEQ_FRESH, SEQ_FAR, -1, -1)
            self._seq_rm(SEQ_FRESH, -1, -1)  # (a cell in two sequences would be moved twice below)
            drift, fresh, fresh_drift = fresh_drift, 0, 0
        else:
            self._seq_rm(SEQ_FAR, old_far_pos + kf, -1)
        if far_pos != old_far_pos:
            if kf:
                lc.llama_memory_seq_add(mem, SEQ_FAR, old_far_pos, old_far_pos + kf, far_pos - old_far_pos)
            if fresh:
                lc.llama_memory_seq_add(mem, SEQ_FRESH, old_far_pos, old_far_pos + fresh, far_pos - old_far_pos)
        self._head, self._near, self._far, self._far_pos = head[:c], near[:cn], far[:kf], far_pos
        self._drift = drift if kf else 0
        self._fresh, self._fresh_drift = (fresh, fresh_drift) if kf else (0, 0)
        logits = None
        try:
            def grew(n: int) -> None:
                self._head = head[:len(self._head) + n]
            logits = self._decode(head[c:], c, SEQ_HEAD, cancelled, grew, batch)
            lc.llama_memory_seq_cp(mem, SEQ_HEAD, SEQ_NEAR, -1, -1)
            if near[cn:]:
                def near_grew(n: int) -> None:
                    self._near = near[:len(self._near) + n]
                logits = self._decode(near[cn:], len(head) + cn, SEQ_NEAR, cancelled, near_grew, batch)
            if far[kf:]:
                lc.llama_memory_seq_cp(mem, SEQ_NEAR, SEQ_FAR, -1, -1)  # the far part must see head and near

                def far_grew(n: int) -> None:
                    self._far = far[:len(self._far) + n]
                logits = self._decode(far[kf:], far_pos + kf, SEQ_FAR, cancelled, far_grew, batch)
        except BaseException:
            # Keep the invariant that near cells follow the whole head; the far cells stay.
            if len(self._head) != len(head):
                self._near = []
            raise
        lc.llama_memory_seq_cp(mem, SEQ_NEAR, SEQ_GEN, -1, -1)
        lc.llama_memory_seq_cp(mem, SEQ_FAR, SEQ_GEN, far_pos, -1)
        if tail:
            logits = self._decode(tail, far_pos + len(far), SEQ_GEN, cancelled)
        assert logits is not None
        evaluated = (len(head) - c) + (len(near) - cn) + (len(far) - kf) + len(tail)
        return logits, evaluated, c + cn + kf

    def warm(self, prompt: Prompt, cancelled: Callable[[], bool], batch: int = PROMPT_BATCH) -> int:
        """Evaluate ``prompt`` into the KV cache ahead of a request for it (nothing generated);
        the prompt tokens evaluated. Stops between two batches once ``cancelled`` says so: what
        was evaluated stays, and the request that interrupted reuses it."""
        try:
            return self._prepare(prompt, cancelled, batch)[1]
        except Cancelled:
            return 0
        except BaseException:
            self.reset_cache()  # as in generate: a failed decode may leave cells the bookkeeping misses
            raise

    def save_state(self) -> KvState | None:
        """The prompt cells now in the context, copied out (``restore_state`` puts them back);
        None when there are none. Generated cells are left out: the next request drops them."""
        if not self._head:
            return None
        lc, mem = self._llama_cpp, self._mem
        self._seq_rm(SEQ_FRESH, -1, -1)  # an unfinished refresh is not kept
        self._fresh = self._fresh_drift = 0
        if not self._near:  # after a cancel the near sequence may lag behind the head
            self._seq_rm(SEQ_NEAR, -1, -1)
            lc.llama_memory_seq_cp(mem, SEQ_HEAD, SEQ_NEAR, -1, -1)
        # The far sequence also holds head and near cells when its part was evaluated last.
        self._seq_rm(SEQ_FAR, 0, self._far_pos)
        self._seq_rm(SEQ_FAR, self._far_pos + len(self._far), -1)
        return KvState(list(self._head), list(self._near), list(self._far), self._far_pos, self._drift,
                       self._seq_state(SEQ_NEAR), self._seq_state(SEQ_FAR) if self._far else b"")

    def restore_state(self, state: KvState) -> bool:
        """Replace the context's cells with ``state``'s; False (and an empty cache) when llama.cpp
        refuses them."""
        lc, mem = self._llama_cpp, self._mem
        self.reset_cache()
        if not (self._set_seq_state(state.near_cells, SEQ_NEAR)
                and (not state.far_cells or self._set_seq_state(state.far_cells, SEQ_FAR))):
            self.reset_cache()
            return False
        lc.llama_memory_seq_cp(mem, SEQ_NEAR, SEQ_HEAD, 0, len(state.head))
        self._head, self._near, self._far = list(state.head), list(state.near), list(state.far)
        self._far_pos, self._drift = state.far_pos, state.drift
        return True

    def refresh_due(self, fraction: float = 0.5) -> bool:
        """Whether the far suffix drifted past ``fraction`` of ``refresh_after`` (and the cache
        holds a whole prompt, so that it can be evaluated afresh where it is)."""
        return (bool(self._far) and self._drift > self.refresh_after * fraction
                and self._far_pos == len(self._head) + len(self._near))

    def refresh_far(self, cancelled: Callable[[], bool], batch: int = PROMPT_BATCH) -> int:
        """Evaluate the cached far suffix afresh, a batch at a time, until it is done or
        ``cancelled`` says stop; the tokens evaluated. The new cells go to ``SEQ_FRESH`` and
        replace the far ones once all are done; a request that comes first keeps what is done
        (and takes it when its drift would drop the far cells). Run while idle, it spares the
        request that reaches ``refresh_after`` evaluating the whole far suffix."""
        if not self.refresh_due(0.0):
            return 0
        lc, mem = self._llama_cpp, self._mem
        far, pos = self._far, self._far_pos
        if self._fresh == 0:
            self._fresh_drift = 0
        lc.llama_memory_seq_cp(mem, SEQ_NEAR, SEQ_FRESH, 0, pos)  # the new cells see head and near
        done = 0
        try:
            while self._fresh < len(far) and not cancelled():
                part = far[self._fresh:self._fresh + batch]
                self._decode(part, pos + self._fresh, SEQ_FRESH, lambda: False, batch=batch)
                self._fresh += len(part)
                done += len(part)
        except BaseException:
            self.reset_cache()  # a failed decode may leave cells the bookkeeping misses
            raise
        self._seq_rm(SEQ_FRESH, 0, pos)
        if self._fresh >= len(far):
            self._seq_rm(SEQ_GEN, -1, -1)  # (the next prompt drops the last answer's cells anyway)
            self._seq_rm(SEQ_FAR, -1, -1)
            lc.llama_memory_seq_cp(mem, SEQ_FRESH, SEQ_FAR, -1, -1)
            self._seq_rm(SEQ_FRESH, -1, -1)
            self._drift, self._fresh, self._fresh_drift = self._fresh_drift, 0, 0
        return done

    def _seq_state(self, seq: int) -> bytes:
        lc, ctx = self._llama_cpp, self._ctx.ctx
        size = lc.llama_state_seq_get_size(ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = lc.llama_state_seq_get_data(ctx, buf, size, seq)
        return bytes(memoryview(buf)[:written])

    def _set_seq_state(self, data: bytes, seq: int) -> bool:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return bool(self._llama_cpp.llama_state_seq_set_data(self._ctx.ctx, buf, len(data), seq))

    # -- generation -------------------------------------------------------------------------
    def generate(self, prompt: Prompt, *, max_tokens: int, stop_at: Callable[[str], int | None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False, time_budget_ms: float = 1e9,
                 blank_may_end: bool = True, repeats_below: Callable[[str], bool] | None = None) -> Generation:
        """Greedy answer to ``prompt``. ``blank_may_end=False``: the end-of-generation token and line
        breaks are passed over (the next most likely token taken) while the answer is blank.
        ``repeats_below(line)`` True: the answer's first line of code only repeats the code below
        the cursor, and generation goes back to where that line began and takes the model's next
        choice there instead (once an answer)."""
        t0 = time.perf_counter()
        try:
            return self._generate(prompt, max_tokens, stop_at, cancelled, time_budget_ms, t0, blank_may_end,
                                  repeats_below)
        except Cancelled:
            ms = (time.perf_counter() - t0) * 1000
            return Generation("", 0, 0, 0, ms, 0.0, "cancelled")
        except BaseException:
            # A failed llama_decode may leave cells half-written that the bookkeeping does not
            # know about: start from an empty cache. Only here: an error before the model ran
            # (building the prompt) or after it (shaping the answer) leaves the cache as it was.
            self.reset_cache()
            raise

    def _drafter(self, prompt: Prompt, max_tokens: int, cancelled: Callable[[], bool]) -> Drafter | None:
        """The drafter for this answer (``speculation``), its prompt ready; None: plain decoding."""
        spec = self.speculation
        if spec.mode == "lookup":
            return PromptLookup(prompt.tokens, spec.ngram_min, spec.ngram_max, max_tokens)
        if spec.mode == "draft" and self.draft is not None:
            drafter = DraftModel(self.draft, spec.draft_p_min, self.n_vocab)
            drafter.start(prompt, cancelled)
            return drafter
        return None

    def _generate(self, prompt: Prompt, max_tokens: int, stop_at: Callable[[str], int | None] | None,
                  cancelled: Callable[[], bool], time_budget_ms: float, t0: float,
                  blank_may_end: bool = True, repeats_below: Callable[[str], bool] | None = None) -> Generation:
        logits, evaluated, reused = self._prepare(prompt, cancelled)
        t_draft = time.perf_counter()
        pos = len(prompt.tokens)
        max_tokens = max(0, min(max_tokens, self.n_ctx - pos - 1))  # never write past the context
        drafter = self._drafter(prompt, max_tokens, cancelled) if max_tokens else None
        t1 = time.perf_counter()
        out = bytearray()
        text, reason = "", "length"
        deadline = t1 + time_budget_ms / 1000
        logprobs: list[float] = []
        chosen: list[int] = []
        """Every token chosen, the end-of-generation one too; all but the last are in SEQ_GEN."""
        drafted = accepted = 0
        budget = self.draft_budgets.setdefault(self.speculation.mode, DraftBudget())
        adaptive = self.speculation.adaptive
        k = self.speculation.draft_tokens
        """Draft length: each checked token costs a little compute (on a CPU running one thread, most
        of a plain step), so drafts shrink after a miss and grow back after full matches."""

        def ends_blank(tok: int) -> bool:
            """Whether ``tok`` would end the answer, or its first line, with nothing written."""
            if self.is_eog(tok):
                return True
            piece = self.piece(tok)
            return b"\n" in piece and not (bytes(out) + piece).split(b"\n", 1)[0].strip()

        def choose(row: np.ndarray) -> int:
            """The model's greedy choice from logits ``row``; while a blank answer may not end
            (``blank_may_end``), not a token that ends it or its line blank."""
            tok = int(np.argmax(row))
            if blank_may_end or text.strip() or not ends_blank(tok):
                return tok
            row = row.copy()
            for _ in range(16):  # end tokens (<eos>, <|endoftext|>...) and line breaks ("\n", "  \n\n"...)
                row[tok] = -np.inf
                tok = int(np.argmax(row))
                if not ends_blank(tok):
                    break
            return tok

        mark: tuple[int, np.ndarray] | None = None
        """Where the answer's first line of code began: the index of its first token in ``chosen``
        and the logits that token was chosen from; set while ``repeats_below`` may still reject it."""
        retry = retried = False
        """``retry``: the first line was rejected, generation goes back to ``mark``; ``retried``:
        it did once (an answer is generated at most twice)."""

        def rejected(answer: str) -> bool:
            """Whether ``answer``, its first line complete, only repeats the code below."""
            nonlocal mark
            if mark is None or repeats_below is None:
                return False
            if repeats_below(answer.lstrip("\n").split("\n", 1)[0]):
                return True
            mark = None  # the first line stands: nothing left to check
            return False

        def take(tok: int, row: np.ndarray) -> bool:
            """Add the model's choice ``tok`` (from logits ``row``) to the answer; True: it ends here
            (or, with ``retry`` set, goes back to ``mark``)."""
            nonlocal text, reason, mark, retry
            chosen.append(tok)
            logprobs.append(_logprob(row, tok))
            if self.is_eog(tok):
                reason = "eog"
                retry = rejected(text)
                return True
            piece = self.piece(tok)
            if repeats_below is not None and not retried and not text.strip() and piece.strip():
                mark = (len(chosen) - 1, row.copy())  # (rows of a draft batch are reused)
            out.extend(piece)
            text = out.decode("utf-8", errors="ignore")
            end = stop_at(text) if stop_at else None
            if end is not None:
                retry = rejected(text)  # before the cut: a repeated line is cut away whole
                text, reason = text[:end], "stop"
                return True
            if mark is not None and "\n" in text.lstrip("\n") and rejected(text):
                retry = True
                return True
            now = time.perf_counter()
            if now > deadline and ("\n" in text or now > deadline + time_budget_ms / 1000):
                reason = "time"
                return True
            return len(chosen) >= max_tokens

        def rewind() -> tuple[np.ndarray, int]:
            """Back to where the rejected first line began; the logits there without the token
            that began it, and the position to decode at."""
            nonlocal text, reason, mark, retry, retried, drafter
            assert mark is not None
            at, row = mark
            row[chosen[at]] = -np.inf
            del chosen[at:], logprobs[at:]
            out[:] = b"".join(self.piece(t) for t in chosen)
            text, reason = out.decode("utf-8", errors="ignore"), "length"
            mark, retry, retried = None, False, True
            drafter = None  # its state follows the rejected tokens; plain decoding from here
            self._seq_rm(SEQ_GEN, len(prompt.tokens) + at, -1)
            return row, len(prompt.tokens) + at

        try:
            done = max_tokens == 0
            while not done:
                tok = choose(logits)
                if take(tok, logits):
                    if not retry:
                        break
                    logits, pos = rewind()
                    continue
                t_step = time.perf_counter()
                draft = drafter.draft(chosen, min(k, max_tokens - len(chosen), PROMPT_BATCH - 1),
                                      cancelled) if drafter and (not adaptive or budget.worth_it()) else []
                if self.speculation.line_cut:
                    # Most answers end at a line's end: tokens drafted past it are mostly wasted
                    # work, and a block's next line is drafted in the next step anyway.
                    ends = next((i for i, t in enumerate(draft) if b"\n" in self.piece(t)), len(draft))
                    del draft[ends + 1:]
                if not draft:
                    next_logits = self._decode([tok], pos, SEQ_GEN, cancelled)
                    assert next_logits is not None
                    logits, pos = next_logits, pos + 1
                    if drafter:
                        budget.plain_step((time.perf_counter() - t_step) * 1000)
                    continue
                # One batch: the chosen token and the draft after it. Row i holds the model's
                # logits after batch token i, so its choice there checks draft token i.
                rows = self._decode_all([tok, *draft], pos, SEQ_GEN, cancelled)
                pos += 1
                drafted += len(draft)
                ok = 0
                for i, proposed in enumerate(draft):
                    if choose(rows[i]) != proposed:
                        break
                    ok += 1
                    pos += 1
                    if take(proposed, rows[i]):
                        done = True
                        break
                accepted += ok
                budget.checked((time.perf_counter() - t_step) * 1000, len(draft), ok)
                k = min(k + 2, self.speculation.draft_tokens) if ok == len(draft) else ok + 1
                logits = rows[ok]
                if ok < len(draft) and not done:
                    self._seq_rm(SEQ_GEN, pos, -1)  # the rejected tokens' cells
                if retry:
                    logits, pos = rewind()
                    done = False
        except Cancelled:
            reason = "cancelled"
        if chosen:
            # As after plain decoding: the prompt and every chosen token but the last are cached.
            self._seq_rm(SEQ_GEN, len(prompt.tokens) + len(chosen) - 1, -1)
        n = len(chosen) - (reason == "eog")
        t2 = time.perf_counter()
        return Generation(text, n, evaluated, reused, (t1 - t0) * 1000, (t2 - t1) * 1000, reason, logprobs,
                          n_drafted=drafted, n_accepted=accepted, draft_prompt_ms=(t1 - t_draft) * 1000)

    def close(self) -> None:
        if self.draft is not None:
            self.draft.close()
            self.draft = None
        if self._adapter is not None:
            self._llama_cpp.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self._batch.close()
        self._ctx.close()
        self._model.close()

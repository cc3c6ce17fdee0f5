"""The one typed configuration of ``slm-lsp finetune``: a dataclass with a docstring per field.

Values come, later winning, from the field defaults, the preset (``--preset quick|full``) and
the flags typed on the command line (``--lora-r 16``; every field is a flag, its docstring the
help). ``validate`` names the flag the user typed. The config used is saved as ``config.json``
beside the adapter.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

TASKS = ("fim", "next-edit", "mixed")
# A next-edit example is a prompt with the edits and a 20-line region, then the region rewritten
# (about 250 answer tokens) or the no-edit marker (6): every answer token weighs the same
# (``loss_per``), or the one token that decides between them weighs 40 times more in a no-edit
# answer and the adapter learns to answer no edit everywhere.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {"next-edit": {"seq_len": 768, "loss_per": "token"},
                                            "mixed": {"seq_len": 768, "loss_per": "token"}}
LOSS_PER = ("example", "token")
AUTO_STEPS = (30, 120)
"""``steps 0``: the fewest and the most optimizer steps scaled to the repository."""
GENERAL_CORPORA = ("stdlib", "site-packages")  # finetune.data.GENERAL_CORPORA (config imports no data code)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


class ConfigError(ValueError):
    """An invalid value; the message names the flag."""


@dataclass
class FinetuneConfig:
    # -- what and where ---------------------------------------------------------------------
    repo: str = ""
    """The repository to adapt the model to (git-tracked files when it is a git repo)."""

    base: str = ""
    """The base model: the GGUF file the server runs (loaded by transformers with ``gguf_file``,
    dequantized) or a Hugging Face directory with safetensors weights."""

    gguf: str = ""
    """The GGUF model the server runs, when ``base`` is a Hugging Face directory: gives the GGUF
    architecture and runs the completion evaluation. Default: ``base`` when it is a GGUF file."""

    out: str = ""
    """Output directory: ``adapter.gguf``, ``template.json``, ``config.json``, ``eval.json``,
    ``checkpoints/``. A directory that already holds a published adapter is refused."""

    task: str = "fim"
    """What the adapter learns: ``fim`` (completion at the cursor, from the files), ``next-edit``
    (next-edit suggestions, from the git history before the ``heldout_commits`` most recent
    commits: ``finetune/next_edit.py``) or ``mixed`` (both in one adapter, ``next_edit_fraction``
    of the examples next-edit ones). ``next-edit`` and ``mixed`` mark the adapter's
    ``template.json`` with ``"next_edit": true`` and default ``seq_len`` to 768."""

    heldout_commits: int = 20
    """``--task next-edit|mixed``: the most recent commits never trained on (``slm-lsp eval
    --task next-edit`` replays them with the same number). Range: 0 to 100000."""

    next_edit_fraction: float = 0.5
    """``--task mixed``: share of the training examples that are next-edit ones. Range: 0 to 1."""

    preset: str = "quick"
    """``quick``: a laptop CPU, minutes on a 0.5B model (attention-only LoRA, short sequences).
    ``full``: GPUs, bf16, attention and MLP LoRA, longer sequences and more steps; on several
    GPUs run it under ``accelerate launch --config_file finetune/accelerate/ddp.yaml
    --num_processes N -m slm_lsp finetune ...`` (README: Fine-tuning on several GPUs).
    ``teach-fim``: teach fill-in-the-middle to a base model without FIM tokens (its reserved
    tokens become the sentinels), on the repository mixed with Python's standard library."""

    # -- data -------------------------------------------------------------------------------
    heldout_fraction: float = 0.1
    """Share of the files held out for evaluation (split by file, never by example)."""

    max_file_bytes: int = 200_000
    """Files larger than this are skipped (data dumps, generated tables)."""

    node_fraction: float = 0.6
    """Share of examples whose middle is a tree-sitter syntax node (expression, statement,
    block, function body); the rest are the rest of a line (like typing) or a random span."""

    line_fraction: float = 0.25
    """Share of examples whose middle is the rest of a line from a random cursor."""

    spm_fraction: float = 0.1
    """Share of examples in suffix-prefix-middle order (the rest prefix-suffix-middle)."""

    context_fraction: float = 0.5
    """Share of examples with repo context (other files of the repo) before the file, in the
    format the server uses (``<|repo_name|>``/``<|file_sep|>`` for Qwen2.5-Coder)."""

    max_middle_lines: int = 8
    """Most lines in a middle."""

    loss_on: str = "middle"
    """``middle``: the loss is taken on the middle (and its end token) only; ``all``: on the
    whole sequence."""

    loss_per: str = "example"
    """How the answer tokens' losses are averaged. ``example``: each example's mean, so every
    FIM middle counts the same, long or short. ``token``: every answer token counts the same
    wherever it is (the sum over a step divided by a fixed estimate of its answer tokens, the mean
    over the first examples); the default of ``--task next-edit|mixed``, whose answers are a
    250-token rewrite or a 6-token no-edit marker that differ in one deciding token: per example,
    that token weighs 40 times more in a no-edit answer, and a 0.5B adapter trained so answered
    no edit on every held-out step."""

    whole_line_fraction: float = 0.0
    """Share of node and line middles widened to whole lines, indentation included, leaving an
    empty line with the cursor at column 0 (a new line the user opened; HumanEval's single- and
    multi-line sets ask that way)."""

    own_names_fraction: float = 0.0
    """Share of the repository's examples whose middle is the rest of a line from a cursor at
    or before a name the training files define (functions, classes, constants, ``self.``
    attributes; as the gate's own-name lines): what an adapter can learn from a codebase that a
    base model cannot know. The rest are drawn as ``node_fraction`` and ``line_fraction`` say."""

    general_corpus: str = ""
    """Also train on general code, comma-separated: ``stdlib`` (Python's standard library
    source) and/or ``site-packages`` (installed packages under permissive licences only), tests
    left out; empty: the repository alone. One repository can be too little code to teach a
    general skill such as fill-in-the-middle to a base model without it."""

    general_fraction: float = 0.5
    """Share of the training examples drawn from ``general_corpus`` (the rest, and all
    held-out files, are the repository's)."""

    general_max_files: int = 2000
    """Most files taken from ``general_corpus`` (a seeded sample)."""

    # -- LoRA -------------------------------------------------------------------------------
    lora_r: int = 8
    """LoRA rank."""

    lora_alpha: float = 16.0
    """LoRA alpha: the update is scaled by ``alpha / r``."""

    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""

    target_modules: list[str] = field(default_factory=lambda: list(ATTENTION))
    """Linear modules that get a LoRA (Hugging Face names, e.g. ``q_proj,v_proj``)."""

    # -- training ---------------------------------------------------------------------------
    steps: int = 0
    """Optimizer steps. 0: scaled to the repository for ``--task fim``, one step per
    ``lines_per_step`` lines of the training files, at least 30 and at most 120
    (``AUTO_STEPS``); 30 for ``next-edit`` and ``mixed``, whose examples are commits."""

    lines_per_step: int = 375
    """``steps 0``: lines of the training files per optimizer step. 375 makes langextract's 34k
    training lines 90 steps, which beat the former fixed 30 on its held-out lines (README,
    "Steps scaled to the repository"). Range: 1 to 1000000."""

    batch_size: int = 1
    """Sequences per micro-batch (per process)."""

    grad_accum: int = 2
    """Micro-batches per optimizer step."""

    seq_len: int = 256
    """Most tokens in a training sequence (context, prefix, suffix and middle together)."""

    lr: float = 5e-4
    """Peak learning rate (AdamW), reached after ``warmup_steps``, then cosine decay to 10%."""

    warmup_steps: int = 5
    """Linear warm-up steps."""

    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""

    precision: str = "fp32"
    """``fp32`` (CPU) or ``bf16`` (GPUs: base weights in bf16, autocast, LoRA weights fp32)."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""

    train_minutes: float = 0.0
    """Stop training after this many minutes of steps, then evaluate and export what was learned
    (0: run all ``steps``): bounds a run's cost on a slow or busy machine. Range: 0 to 100000."""

    save_every: int = 10
    """Save a checkpoint every this many steps (and on Ctrl-C)."""

    resume: bool = False
    """Continue from the newest checkpoint in ``out/checkpoints``."""

    threads: int = 0
    """CPU threads for torch and llama.cpp (0: all cores)."""

    seed: int = 1234
    """Seed of the data sampling, the split and the LoRA initialisation."""

    log_shards: bool = False
    """Every process prints, after each step, the indices of the examples it trained on, the
    gradient norm (after DDP averaged the processes' gradients) and a digest of its LoRA
    weights: checks that a multi-GPU run gives each process its own examples and keeps all
    processes' weights identical."""

    # -- evaluation -------------------------------------------------------------------------
    eval_examples: int = 16
    """Held-out FIM examples for the loss before and after training."""

    eval_lines: int = 200
    """Held-out line completions (exact match, edit similarity) run through the server's
    completion engine on the GGUF, before and after, each on a different line, spread over the
    held-out files; fewer when the held-out files do not have that many lines (the run says
    so). Both models answer the same lines: the publish gate compares them line by line.
    0: skip (the held-out loss decides alone). Cost: two passes of these lines; with the 0.5B
    and 512-token prompts a line takes 6.6 CPU seconds (measured on one core), so 200 lines are
    about 22 CPU minutes a pass (at best 11 minutes on 2 free cores)."""

    eval_own_names_fraction: float = 0.5
    """Share of the evaluation lines drawn from lines that use a name the training files
    define (functions, classes, constants, attributes): what an adapter can learn from the
    repository. They are also reported as a subset of their own."""

    eval_confidence: float = 0.95
    """Confidence of the paired bootstrap intervals the gate prints and decides on."""

    eval_resamples: int = 2000
    """Bootstrap resamples of the paired per-line differences."""

    eval_cache: str = ""
    """A directory that keeps the base model's answers to the evaluation lines, keyed by the
    GGUF file, the lines and the prompt budget: a second run on the same repository (another
    learning rate, rank or step count) skips the base's pass, half the gate's cost (e.g.
    ``~/.cache/slm-lsp/finetune-eval``). Empty: no cache."""

    eval_prompt_tokens: int = 0
    """Prompt budget of the line completion evaluation, split 3:1 between prefix and suffix
    (0: the server's defaults, ``completion.prefix_tokens`` + ``completion.suffix_tokens``)."""

    min_loss_gain: float = 0.01
    """The adapter is published only if the held-out loss drops by at least this much (nats
    per token), and, on the evaluation lines, the edit similarity does not fall and exact
    match is not significantly worse (README: Fine-tuning, the publish gate)."""

    max_similarity_drop: float = 0.01
    """The lower end of the edit similarity difference's interval (adapter minus base, paired,
    ``eval_confidence``) must lie above minus this: a set of lines too small or too spread to
    rule out a larger loss refuses the adapter."""

    exact_match_alpha: float = 0.05
    """The adapter is refused when it loses more exact-match lines than it wins and the exact
    sign test gives p below this."""

    keep_anyway: bool = False
    """Publish the adapter even if the held-out results did not improve."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag of the first invalid value."""
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')}: {what}, got {getattr(self, name)!r}")

        need(bool(self.repo), "repo", "the repository to learn from is required")
        need(bool(self.base), "base", "the base model (GGUF file or HF directory) is required")
        need(bool(self.out), "out", "an output directory is required")
        need(self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}")
        need(0.0 < self.heldout_fraction < 1.0, "heldout_fraction", "between 0 and 1")
        for name in ("node_fraction", "line_fraction", "spm_fraction", "context_fraction"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "between 0 and 1")
        need(self.node_fraction + self.line_fraction <= 1.0, "line_fraction",
             "node_fraction + line_fraction must be at most 1")
        need(self.loss_on in ("middle", "all"), "loss_on", "middle or all")
        need(self.loss_per in LOSS_PER, "loss_per", " or ".join(LOSS_PER))
        need(self.precision in ("fp32", "bf16"), "precision", "fp32 or bf16")
        need(self.lora_r >= 1, "lora_r", "at least 1")
        need(self.lora_alpha > 0, "lora_alpha", "positive")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "in [0, 1)")
        need(bool(self.target_modules), "target_modules", "at least one module")
        for name in ("batch_size", "grad_accum", "save_every", "max_middle_lines", "eval_examples"):
            need(getattr(self, name) >= 1, name, "at least 1")
        need(0 <= self.steps <= 10_000_000, "steps", "0 (scaled to the repository) to 10000000")
        need(1 <= self.lines_per_step <= 1_000_000, "lines_per_step", "between 1 and 1000000")
        need(self.seq_len >= 64, "seq_len", "at least 64")
        need(self.lr > 0, "lr", "positive")
        for name in ("warmup_steps", "eval_lines", "threads", "eval_prompt_tokens"):
            need(getattr(self, name) >= 0, name, "not negative")
        need(self.max_file_bytes >= 1024, "max_file_bytes", "at least 1024")
        need(0.0 <= self.whole_line_fraction <= 1.0, "whole_line_fraction", "between 0 and 1")
        need(0.0 <= self.own_names_fraction <= 1.0, "own_names_fraction", "between 0 and 1")
        need(0.0 <= self.train_minutes <= 100_000, "train_minutes", "between 0 and 100000")
        need(all(x.strip() in GENERAL_CORPORA for x in self.general_corpus.split(",") if x.strip()),
             "general_corpus", f"empty or a comma-separated list of {', '.join(GENERAL_CORPORA)}")
        need(0.0 <= self.general_fraction < 1.0, "general_fraction", "in [0, 1)")
        need(1 <= self.general_max_files <= 1_000_000, "general_max_files", "between 1 and 1000000")
        need(self.task in TASKS, "task", f"one of {', '.join(TASKS)}")
        need(0 <= self.heldout_commits <= 100_000, "heldout_commits", "between 0 and 100000")
        need(0.0 <= self.next_edit_fraction <= 1.0, "next_edit_fraction", "between 0 and 1")
        need(0.0 <= self.eval_own_names_fraction <= 1.0, "eval_own_names_fraction", "between 0 and 1")
        need(0.5 <= self.eval_confidence < 1.0, "eval_confidence", "in [0.5, 1)")
        need(100 <= self.eval_resamples <= 1_000_000, "eval_resamples", "between 100 and 1000000")
        need(0.0 <= self.max_similarity_drop <= 1.0, "max_similarity_drop", "between 0 and 1")
        need(0.0 < self.exact_match_alpha <= 1.0, "exact_match_alpha", "in (0, 1]")

    def steps_for(self, train_lines: int) -> int:
        """The optimizer steps of a run whose training files hold ``train_lines`` lines:
        ``steps`` when given, else scaled to the repository (a 34k-line repository learned its
        own code from 90 steps where 30 fell short; a small one still gets 30, and 120 bounds
        the quick preset's time: 6 minutes on 2 free cores, 28 on one busy one)."""
        if self.steps:
            return self.steps
        if self.task != "fim":
            return AUTO_STEPS[0]
        return max(AUTO_STEPS[0], min(AUTO_STEPS[1], train_lines // self.lines_per_step))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


PRESETS: dict[str, dict[str, Any]] = {
    # Qwen2.5-Coder-0.5B on 2 free CPU cores: load 1 min, 30 to 120 steps (one per 375 training
    # lines) of 2 x 256 tokens at 3 s, and the gate's 200 held-out lines twice at 2.6 s a line
    # (9 min a pass; fewer --eval-lines or a smaller --eval-prompt-tokens trade confidence for
    # time). The field defaults are this preset.
    "quick": {"eval_prompt_tokens": 512},
    # A GPU, or several: accelerate launch --config_file finetune/accelerate/ddp.yaml --num_processes N
    # -m slm_lsp finetune REPO --base M --preset full --out DIR (DDP; each step then trains on
    # batch_size x grad_accum x N sequences). bf16, LoRA on attention and MLP.
    "full": {"precision": "bf16", "target_modules": ATTENTION + MLP, "lora_r": 16, "lora_alpha": 32.0,
             "steps": 1000, "batch_size": 8, "grad_accum": 2, "seq_len": 2048, "lr": 2e-4, "warmup_steps": 50,
             "save_every": 200, "eval_examples": 200, "eval_lines": 400, "gradient_checkpointing": True,
             "eval_prompt_tokens": 0},
    # Teach fill-in-the-middle to a base model without it (Gemma 3 270M base, Llama 3.2): its
    # reserved tokens become the sentinels (finetune/base.py), half the examples come from
    # Python's standard library (one repository is too little code to learn a skill from), a
    # third of the middles are whole lines from column 0. SPM only: the prompt ends with the
    # prefix, so the middle is the plain continuation the base already writes, and the adapter
    # learns to read the suffix and to end the middle (PSM, the middle after the suffix, cost
    # 60 steps the base's skill: 2.7% on HumanEval single-line against 22.3% prefix-only). LoRA
    # r=16 on attention and MLP, lr 3e-4. Gemma 3 270M with --threads 2 on 2 free CPU cores:
    # 1.7 s a step, 600 steps of 2 x 256 tokens, 18.5 minutes in all; README, "Teaching FIM to a
    # base model without it". The held-out loss alone gates (bench humaneval measures the skill).
    "teach-fim": {"target_modules": ATTENTION + MLP, "lora_r": 16, "lora_alpha": 32.0, "lr": 3e-4,
                  "steps": 600, "batch_size": 1, "grad_accum": 2, "seq_len": 256, "warmup_steps": 20,
                  "train_minutes": 90.0, "save_every": 50, "spm_fraction": 1.0, "context_fraction": 0.2,
                  "node_fraction": 0.45, "line_fraction": 0.4, "whole_line_fraction": 0.35, "max_middle_lines": 6,
                  "general_corpus": "stdlib", "general_fraction": 0.5, "eval_lines": 0, "eval_examples": 8},
}


def _docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal after each annotated field)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


FIELD_DOCS = _docs(FinetuneConfig)
POSITIONAL = ("repo",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (``--lora-r``), the field's docstring as help; ``repo`` is positional."""
    hints = get_type_hints(FinetuneConfig)
    defaults = FinetuneConfig()
    for f in dataclasses.fields(FinetuneConfig):
        kind, doc = hints[f.name], FIELD_DOCS.get(f.name, "")
        default = getattr(defaults, f.name)
        help_text = f"{doc} (default: {','.join(default) if isinstance(default, list) else default})"
        help_text = help_text.replace("%", "%%")
        if f.name in POSITIONAL:
            parser.add_argument(f.name, help=doc)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif kind == list[str]:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text,
                                type=lambda s: [x.strip() for x in s.split(",") if x.strip()])
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text,
                                choices=list(PRESETS) if f.name == "preset" else None)


def from_args(args: argparse.Namespace | dict[str, Any]) -> FinetuneConfig:
    """Defaults, then the preset, then the values given explicitly; validated."""
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    given = {k: v for k, v in given.items() if k in names}
    preset = given.get("preset", FinetuneConfig.preset)
    if preset not in PRESETS:
        raise ConfigError(f"--preset: one of {', '.join(PRESETS)}, got {preset!r}")
    task_defaults = TASK_DEFAULTS.get(str(given.get("task", FinetuneConfig.task)), {})
    cfg = FinetuneConfig(**{**PRESETS[preset], **task_defaults, **given})
    cfg.validate()
    return cfg


def load_config(path: Path) -> FinetuneConfig:
    """The config saved beside an adapter (``config.json``)."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    return FinetuneConfig(**{k: v for k, v in data.items() if k in names})

"""``slm-lsp finetune``: adapt the model to a repository with LoRA, export a GGUF adapter.

Reads top to bottom: data -> base model -> evaluation before -> LoRA training (checkpoints,
``--resume``, Ctrl-C saves) -> evaluation after -> export -> publish only if it helps.

The same command runs on several GPUs with no change (``tests/finetune/test_lora_distributed.py``
runs it under ``torchrun --nproc-per-node 2`` on CPUs)::

    accelerate launch --config_file finetune/accelerate/ddp.yaml -m slm_lsp finetune REPO \
        --base M.gguf --preset full --out DIR
    torchrun --nproc-per-node 4 -m slm_lsp finetune REPO --base M.gguf --preset full --out DIR

accelerate wraps the model in DDP, which averages the gradients of all processes in the
backward pass of the last micro-batch of each step. Process ``r`` of ``w`` takes the
``r``-th of every ``w`` consecutive micro-batches (example ``i`` is a pure function of the seed
and ``i``), so the processes train on disjoint shards and a step sees ``w`` times the examples
of one process. Only the first process evaluates, writes checkpoints and exports; the others
write nothing. Sharded training (FSDP, DeepSpeed) is refused: the first process alone
evaluates and exports, which needs the whole model in its memory. DDP keeps a copy of the
frozen base on each GPU (bf16: 2 bytes a parameter, 15 GB for 7B) and only the LoRA weights
are trained, so their gradients and optimizer state are small.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

from slm_lsp.engine.model import ADAPTER_TEMPLATE

from .config import AUTO_STEPS, FinetuneConfig
from .data import (
    DataSettings,
    ExampleMaker,
    MixedExamples,
    SourceFile,
    collate,
    count_by,
    load_files,
    load_general_corpus,
    repo_names,
)
from .evaluate import (
    CompletionScores,
    Decision,
    LineOutcome,
    LineTask,
    PairedComparison,
    base_lines,
    compare_paired,
    complete_lines,
    decide,
    describe_decisions,
    heldout_loss,
    line_tasks,
    next_edit_decisions,
)

ADAPTER = "adapter.gguf"
PEFT_DIR = "peft"
"""The same LoRA as a PEFT directory (``adapter_config.json``, ``adapter_model.safetensors``):
what vLLM's ``--lora-modules NAME=OUT/peft`` loads onto the Hugging Face base."""
CHECKPOINTS = "checkpoints"
EXIT_NOT_PUBLISHED = 3
# The other processes wait at a barrier while the first evaluates the base model (line
# completions through llama.cpp can take longer than NCCL's default timeout of 10 minutes).
BARRIER_TIMEOUT = timedelta(hours=3)
# accelerate modes that shard the model: the first process alone could then neither evaluate
# nor export it (and the optimizer state would be sharded in the checkpoints).
SHARDED_MODES = ("DEEPSPEED", "FSDP", "MEGATRON_LM", "TP")
TOKEN_NORM_EXAMPLES = 32
"""``loss_per token``: examples whose mean answer length fixes a step's loss divisor."""


class FinetuneError(Exception):
    """A problem the user can fix; the message names the flag or file."""


def main(cfg: FinetuneConfig) -> int:
    """Run a whole finetune; returns the process exit code (0: published,
    3: trained but not published because the held-out results did not improve, 130: Ctrl-C)."""
    import torch
    from accelerate import Accelerator, InitProcessGroupKwargs
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    cfg.validate()
    out = Path(cfg.out).expanduser()
    ckpt_dir = out / CHECKPOINTS
    if (out / ADAPTER).exists() or (out / PEFT_DIR).exists():
        raise FinetuneError(f"--out: {out} already holds a published adapter (a server may be using it); "
                            "adapters are never overwritten: choose a new --out")
    if not cfg.resume and latest_checkpoint(ckpt_dir) is not None:
        raise FinetuneError(f"--out: {out} holds checkpoints of an earlier run: pass --resume or choose a new --out")
    # cpu=True where there is no GPU: accelerate otherwise ignores torchrun's processes on a
    # CPU-only machine (each one then trained on the same examples and wrote the adapter).
    accelerator = Accelerator(mixed_precision="bf16" if cfg.precision == "bf16" else "no",
                              cpu=not torch.accelerator.is_available(),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=BARRIER_TIMEOUT)])
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise FinetuneError(f"launched as {launched} processes (WORLD_SIZE) but accelerate runs "
                            f"{accelerator.num_processes}: each would train alone and write the adapter")
    mode = str(getattr(accelerator.distributed_type, "name", accelerator.distributed_type))
    if mode in SHARDED_MODES:
        raise FinetuneError(f"accelerate: {mode} is not supported: run LoRA finetuning with DDP "
                            "(accelerate launch --config_file finetune/accelerate/ddp.yaml ...)")
    is_main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    # The processes on one machine share its cores (torchrun and accelerate set LOCAL_WORLD_SIZE).
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)

    def say(msg: str) -> None:
        if is_main:
            print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    # -- 1. data: files, by-file split ------------------------------------------------------
    files = load_files(Path(cfg.repo), heldout_fraction=cfg.heldout_fraction, max_file_bytes=cfg.max_file_bytes,
                       seed=cfg.seed)
    if not files.train or not files.heldout:
        raise FinetuneError(f"{cfg.repo}: too few code files ({len(files.train)} train, {len(files.heldout)} "
                            f"held-out; dropped {dict(files.dropped)})")
    say(f"finetune: {len(files.train)} train files, {len(files.heldout)} held-out; dropped {dict(files.dropped)}")
    if not cfg.steps:  # scaled to the repository; config.json and eval.json record the number
        train_lines = sum(f.text.count("\n") + 1 for f in files.train)
        cfg = dataclasses.replace(cfg, steps=cfg.steps_for(train_lines))
        say(f"finetune: {cfg.steps} steps for {train_lines} lines of training files "
            + (f"(one per {cfg.lines_per_step}, {AUTO_STEPS[0]} to {AUTO_STEPS[1]}; --steps N to choose)"
               if cfg.task == "fim"
               else f"(--task {cfg.task}; --steps N to choose)"))

    # -- 2. base model, tokenizer, FIM template ---------------------------------------------
    t0 = time.perf_counter()
    from .base import causal_lm_loss, labelled_tokens, load_base, served_template

    base = load_base(cfg.base, cfg.gguf, cfg.precision)
    base.model.to(accelerator.device)
    say(f"finetune: base {cfg.base} loaded in {time.perf_counter() - t0:.0f} s; GGUF architecture {base.arch}, "
        f"template {base.template.name}")
    settings = DataSettings.from_config(cfg)
    repo_name = Path(cfg.repo).resolve().name
    train_names = repo_names(files.train)
    maker: ExampleMaker | MixedExamples = ExampleMaker(files.train, base.template, base.tokenizer,
                                                       end_token=base.end_token, bos=base.bos, settings=settings,
                                                       repo_name=repo_name, seed=cfg.seed, names=train_names)
    if cfg.general_corpus:
        general = load_general_corpus(cfg.general_corpus, max_files=cfg.general_max_files,
                                      max_file_bytes=cfg.max_file_bytes, seed=cfg.seed)
        if not general.files:
            raise FinetuneError(f"--general-corpus {cfg.general_corpus}: no files (dropped {dict(general.dropped)})")
        say(f"finetune: general corpus {cfg.general_corpus}: {len(general.files)} files "
            f"({', '.join(f'{k} {v}' for k, v in general.sources.most_common(5))}, ...), "
            f"{cfg.general_fraction:.0%} of the examples; dropped {dict(general.dropped)}")
        maker = MixedExamples(maker, ExampleMaker(general.files, base.template, base.tokenizer,
                                                  end_token=base.end_token, bos=base.bos, settings=settings,
                                                  repo_name="python", seed=cfg.seed + 2),
                              cfg.general_fraction, cfg.seed)
    eval_maker = ExampleMaker(files.heldout, base.template, base.tokenizer, end_token=base.end_token, bos=base.bos,
                              settings=settings, repo_name=repo_name, seed=cfg.seed + 1)
    eval_examples = eval_maker.examples(range(cfg.eval_examples))

    def gate_lines(heldout: list[SourceFile], names: set[str]) -> list[LineTask]:
        """The gate's held-out lines, half of them (``eval_own_names_fraction``) on lines using
        one of ``names`` (those the training files define): the same lines for the same files,
        whatever the task."""
        return line_tasks(heldout, cfg.eval_lines, cfg.seed, names=names,
                          own_names_fraction=cfg.eval_own_names_fraction) if base.gguf is not None else []

    tasks = gate_lines(files.heldout, train_names) if cfg.task == "fim" else []
    decision_check: tuple[list[Any], tuple[int, int, int]] | None = None
    if cfg.task != "fim":  # next edits from the history before the held-out commits (finetune/next_edit.py)
        from .next_edit import task_data

        try:
            data = task_data(cfg, base, repo_name, settings)
        except ValueError as exc:
            raise FinetuneError(str(exc)) from exc
        maker, eval_examples = data.maker, data.eval_examples
        if data.decision is not None and data.decision_examples:
            decision_check = (data.decision_examples, data.decision)
        # mixed: the FIM lines of the gate come from the files at the cut (the work tree holds
        # the held-out commits' results); next-edit alone: the held-out loss decides.
        if data.fim_files is not None:
            tasks = gate_lines(data.fim_files.heldout, repo_names(data.fim_files.train))
        say(f"finetune: --task {cfg.task}: {json.dumps(data.summary)}")
    if base.gguf is not None and cfg.eval_lines and cfg.task != "next-edit":  # next-edit alone: no lines
        say(f"finetune: {len(tasks)} held-out lines for the gate from {len({t.path for t in tasks})} files, "
            f"{sum(t.own_names for t in tasks)} using the repository's own names"
            + (f" (fewer than --eval-lines {cfg.eval_lines}: the held-out files have no more)"
               if len(tasks) < cfg.eval_lines else ""))
    pad_id = base.end_token

    def lines_done(when: str) -> Callable[[int, list[LineOutcome]], None]:
        """Reports every 25 lines: the evaluation of a few hundred lines takes minutes."""
        def report(total: int, outcomes: list[LineOutcome]) -> None:
            if len(outcomes) % 25 == 0 or len(outcomes) == total:
                done = CompletionScores.of(outcomes)
                say(f"finetune: {when}: {done.n}/{total} lines, exact match {done.exact_match:.3f}, edit similarity "
                    f"{done.edit_similarity:.3f}, {done.mean_ms / 1000:.1f} s a line")
        return report

    # -- 3. evaluation before ---------------------------------------------------------------
    before_file = ckpt_dir / "eval_before.json"
    before: dict[str, Any] = {}
    if is_main:
        if cfg.resume and before_file.is_file():
            before = json.loads(before_file.read_text())
            if len(before.get("lines", tasks)) != len(tasks):
                raise FinetuneError(f"--resume: {before_file} holds {len(before['lines'])} evaluation lines, this run "
                                    f"{len(tasks)}: resume with the --eval-lines of the first run")
        else:
            t0 = time.perf_counter()
            before = {"loss": heldout_loss(base.model, eval_examples, pad_id)}
            if decision_check is not None:
                before["decisions"] = next_edit_decisions(base.model, *decision_check)
            if tasks and base.gguf is not None:
                cache = Path(cfg.eval_cache).expanduser() if cfg.eval_cache else None
                outcomes, cached = base_lines(cache, base.gguf, tasks, threads=threads,
                                              prompt_tokens=cfg.eval_prompt_tokens, progress=lines_done("before"))
                _add_lines(before, outcomes)
                before["lines_from_cache"] = cached
                if cached:
                    say(f"finetune: before: the base's answers to these {len(tasks)} lines came from {cache}")
            before["seconds"] = round(time.perf_counter() - t0, 1)
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            _write_json(before_file, before)
            say(f"finetune: before: {_summary(before)} ({time.perf_counter() - t0:.0f} s)")
    accelerator.wait_for_everyone()

    # -- 4. LoRA ----------------------------------------------------------------------------
    model = get_peft_model(base.model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]
                                                  lora_dropout=cfg.lora_dropout,
                                                  target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    if cfg.gradient_checkpointing:
        # Non-reentrant, PyTorch's recommended kind, on every transformers version (4.x defaulted
        # to the reentrant kind; 5.x renamed the method and keeps the old name as a deprecated alias).
        kind = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kind)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kind)
        model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    step, history = 0, list[float]()
    if cfg.resume:
        step, history = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
        say(f"finetune: resumed at step {step} from {ckpt_dir}")
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler steps once per step, not per process
    model.train()

    def save(at: int) -> None:
        if is_main:
            save_checkpoint(ckpt_dir, at, accelerator.unwrap_model(model), optimizer, scheduler, history)

    # -- 5. training -----------------------------------------------------------------------
    # loss_per token: a step's summed loss over a fixed count, the answer tokens a step holds on
    # average (from the first examples, the same on every process and at --resume), so that each
    # answer token weighs the same in every step, not more in a step of short answers.
    per_step_tokens = 0.0
    if cfg.loss_per == "token":
        sample = maker.examples(range(TOKEN_NORM_EXAMPLES))
        per_step_tokens = max(1.0, labelled_tokens(sample) / len(sample)) * cfg.batch_size * cfg.grad_accum
        say(f"finetune: loss per token: a step's loss is its sum over {per_step_tokens:.0f} answer tokens "
            f"(the mean of the first {len(sample)} examples x {cfg.batch_size * cfg.grad_accum})")
    n_tokens = 0
    trained_on: list[int] = []  # this step's example indices, for --log-shards
    t_train = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, desc="finetune", unit="step", file=sys.stderr)
    try:
        while step < cfg.steps:
            step_loss = 0.0
            for micro in range(cfg.grad_accum):
                first = ((step * cfg.grad_accum + micro) * world + rank) * cfg.batch_size
                trained_on.extend(range(first, first + cfg.batch_size))
                examples = maker.examples(range(first, first + cfg.batch_size))
                batch = {k: torch.tensor(v, device=accelerator.device) for k, v in collate(examples, pad_id).items()}
                n_tokens += int(batch["attention_mask"].sum())
                sync = micro == cfg.grad_accum - 1
                with nullcontext() if sync else accelerator.no_sync(model):  # DDP: all-reduce on the last only
                    with accelerator.autocast():
                        if per_step_tokens:
                            loss = causal_lm_loss(model, batch, "sum") / per_step_tokens
                        else:
                            loss = causal_lm_loss(model, batch) / cfg.grad_accum
                    accelerator.backward(loss)
                step_loss += float(loss.detach())
            grad_norm = accelerator.clip_grad_norm_(params, 1.0)  # of the averaged gradients
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if cfg.log_shards:  # one write per line: the processes share the terminal
                sys.stderr.write(f"finetune[rank {rank}/{world}]: step {step} examples "
                                 f"{','.join(map(str, trained_on))} grad_norm {float(grad_norm):.9g} "
                                 f"lora_sha256 {lora_digest(model)}\n")
                sys.stderr.flush()
            trained_on.clear()
            if world > 1:  # the loss of the whole step, all processes' examples
                step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean"))
            history.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if step % cfg.save_every == 0 and step < cfg.steps:
                save(step)
            if cfg.train_minutes:
                out_of_time = float(time.perf_counter() - t_train > cfg.train_minutes * 60)
                if world > 1:  # all processes stop at the same step (any one's clock decides)
                    out_of_time = float(accelerator.reduce(torch.tensor(out_of_time, device=accelerator.device), "sum"))
                if out_of_time:
                    say(f"\nfinetune: --train-minutes {cfg.train_minutes:g} reached at step {step} of {cfg.steps}")
                    break
    except KeyboardInterrupt:
        bar.close()
        save(step)
        say(f"\nfinetune: interrupted at step {step}: checkpoint saved in {ckpt_dir}; continue with --resume")
        return 130
    bar.close()
    save(step)
    train_s = time.perf_counter() - t_train
    if world > 1:
        n_tokens = int(accelerator.reduce(torch.tensor(n_tokens, device=accelerator.device), "sum"))
    accelerator.wait_for_everyone()
    if not is_main:
        return 0

    # -- 6. evaluation after, export --------------------------------------------------------
    peft_model = accelerator.unwrap_model(model)
    staging = out / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    from .export import export_peft_model

    hf_cfg = peft_model.base_model.model.config
    served = served_template(base.template, cfg.spm_fraction)
    export_peft_model(peft_model, staging / ADAPTER, arch=base.arch, n_blocks=base.n_blocks,
                      n_head=hf_cfg.num_attention_heads,
                      n_head_kv=getattr(hf_cfg, "num_key_value_heads", None) or hf_cfg.num_attention_heads,
                      metadata={"general.name": f"slm-lsp finetune of {Path(cfg.base).name} on {repo_name}",
                                "adapter.slm_lsp.fim_template": served.to_json()})
    save_peft_dir(peft_model, staging / PEFT_DIR)
    served.save(staging / ADAPTER_TEMPLATE)
    if cfg.task != "fim":  # the server then sends this adapter the raw next-edit prompt it learned
        from .next_edit import mark_template

        mark_template(staging / ADAPTER_TEMPLATE)
    t0 = time.perf_counter()
    after: dict[str, Any] = {"loss": heldout_loss(peft_model, eval_examples, pad_id)}
    if decision_check is not None:
        after["decisions"] = next_edit_decisions(peft_model, *decision_check)
    if tasks and base.gguf is not None:
        _add_lines(after, complete_lines(base.gguf, tasks, adapter=staging / ADAPTER, threads=threads,
                                         prompt_tokens=cfg.eval_prompt_tokens, progress=lines_done("after")))
    after["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"finetune: after:  {_summary(after)} ({after['seconds']:.0f} s)")

    # -- 7. publish only what helps ---------------------------------------------------------
    decision, gate, gate_report = judge(before, after, tasks, cfg)
    say(gate_report)
    improved, why = decision.publish, decision.reason
    publish = improved or cfg.keep_anyway
    report = {
        "before": before, "after": after, "improved": improved, "reason": why, "decided_by": decision.metric,
        "gate": gate, "published": publish,
        "steps": step, "train_seconds": round(train_s, 1), "train_tokens_per_second": round(n_tokens / train_s, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "train_loss_first_last_5": [_mean(history[:5]), _mean(history[-5:])],
        "files": {"train": len(files.train), "heldout": [f.path for f in files.heldout],
                  "dropped": dict(files.dropped)},
        "examples": {"eval": len(eval_examples), "eval_kinds": count_by(eval_examples, lambda e: e.kind),
                     "line_tasks": len(tasks)},
        # which line each of before["lines"] and after["lines"] is: two runs' answers pair up by it
        "line_tasks": [{"path": t.path, "line": t.line, "column": t.column, "own_names": t.own_names}
                       for t in tasks],
        "template": served.name,
        "processes": world,
    }
    _write_json(staging / "eval.json", report)
    (staging / "config.json").write_text(cfg.to_json())
    if publish:
        move_dir_no_clobber(staging / PEFT_DIR, out / PEFT_DIR)
        for name in (ADAPTER_TEMPLATE, "config.json", "eval.json", ADAPTER):  # the adapter last
            move_no_clobber(staging / name, out / name)
        staging.rmdir()
        say(f"finetune: {'published' if improved else 'published anyway (--keep-anyway)'} (decided by "
            f"{decision.metric}): {why}; {out / ADAPTER} (use it: slm-lsp serve --adapter {out / ADAPTER}, or "
            "workspace/executeCommand slm.loadAdapter)")
        return 0
    rejected = out / "rejected"
    shutil.rmtree(rejected, ignore_errors=True)
    staging.rename(rejected)
    say(f"finetune: NOT published (decided by {decision.metric}): {why}; the adapter is kept in {rejected} "
        "(--keep-anyway publishes it)")
    return EXIT_NOT_PUBLISHED


# -- helpers ------------------------------------------------------------------------------------
def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def judge(before: dict[str, Any], after: dict[str, Any], tasks: list[LineTask],
          cfg: FinetuneConfig) -> tuple[Decision, dict[str, Any], str]:
    """The publish gate (``evaluate.decide``) on the per-line outcomes of base and adapter on
    the same ``tasks``; also the report (all lines, and the subset using the repository's own
    names) as JSON and as text with the uncertainty of each number."""
    def paired(b: list[LineOutcome], a: list[LineOutcome]) -> PairedComparison:
        return compare_paired(b, a, confidence=cfg.eval_confidence, resamples=cfg.eval_resamples, seed=cfg.seed)

    gate: dict[str, Any] = {"loss": [before["loss"], after["loss"]], "lines_requested": cfg.eval_lines}
    text = [f"finetune: gate: held-out loss {before['loss']:.4f} -> {after['loss']:.4f}"]
    comparison = None
    if "lines" in before and "lines" in after:
        b = [LineOutcome(**o) for o in before["lines"]]
        a = [LineOutcome(**o) for o in after["lines"]]
        comparison = paired(b, a)
        own = [i for i, t in enumerate(tasks) if t.own_names]
        own_comparison = paired([b[i] for i in own], [a[i] for i in own])
        gate.update(files=len({t.path for t in tasks}), all=comparison.as_dict(), own_names=own_comparison.as_dict())
        text += [f"  all lines (n={comparison.n}, from {gate['files']} held-out files):", comparison.describe("    "),
                 f"  lines using the repository's own names (n={own_comparison.n}):", own_comparison.describe("    ")]
    decision = decide(before["loss"], after["loss"], comparison, min_loss_gain=cfg.min_loss_gain,
                      max_similarity_drop=cfg.max_similarity_drop, exact_match_alpha=cfg.exact_match_alpha)
    if "decisions" in after:
        d = gate["decisions"] = {"before": before.get("decisions"), "after": after["decisions"]}
        text.append(f"  next-edit decisions on {d['after']['edit']['of'] + d['after']['none']['of']} validation "
                    f"questions: " + (f"before: {describe_decisions(d['before'])}; " if d["before"] else "")
                    + f"after: {describe_decisions(d['after'])}")
        if decision.publish and d["after"]["edit"]["of"] and not d["after"]["edit"]["right"]:
            # A lower loss is no use if the server would never see an edit from the adapter.
            decision = Decision(False, "next-edit decisions",
                                f"it chose no edit on all {d['after']['edit']['of']} validation questions with one")
    text.append(f"  decision: {'publish' if decision.publish else 'refuse'}, decided by {decision.metric}")
    return decision, gate, "\n".join(text)


def _add_lines(result: dict[str, Any], outcomes: list[LineOutcome]) -> None:
    """The summary and the per-line outcomes (the gate pairs them; ``--resume`` keeps them)."""
    result["completion"] = CompletionScores.of(outcomes).as_dict()
    result["lines"] = [dataclasses.asdict(o) for o in outcomes]


def lora_digest(model: Any) -> str:
    """SHA-256 of the trainable weights (name and bytes, in name order): equal on every process
    exactly when they hold the same LoRA."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        digest.update(name.removeprefix("module.").encode())
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")


def _summary(result: dict[str, Any]) -> str:
    text = f"held-out loss {result['loss']:.4f}"
    if result.get("decisions"):
        text += f", next-edit decisions: {describe_decisions(result['decisions'])}"
    c = result.get("completion")
    if c:
        text += (f", line completions: exact match {c['exact_match']:.3f}, edit similarity "
                 f"{c['edit_similarity']:.3f} (n={c['n']}, {c['mean_ms']:.0f} ms each)")
    return text


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def move_no_clobber(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` atomically, never replacing an existing ``dst`` (a hard link
    fails if the name exists; where links are not supported, a checked rename)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise FinetuneError(f"{dst} appeared meanwhile: not overwriting it") from None
    except OSError:
        if dst.exists():
            raise FinetuneError(f"{dst} exists: not overwriting it") from None
        os.replace(src, dst)
        return
    src.unlink()


def move_dir_no_clobber(src: Path, dst: Path) -> None:
    """Rename the directory ``src`` to ``dst``, never replacing an existing ``dst`` (rename(2)
    would replace an empty directory)."""
    if dst.exists() or dst.is_symlink():
        raise FinetuneError(f"{dst} exists: not overwriting it")
    os.rename(src, dst)


def save_peft_dir(model: Any, path: Path) -> Path:
    """The LoRA as a PEFT directory at ``path``, written atomically (a temporary directory,
    then a rename), so a server never reads half a directory."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # save_embedding_layers=False: "auto" looks the base model up on the Hugging Face hub when
    # its directory has no config.json (a GGUF base), and the embeddings are not trained.
    model.save_pretrained(str(tmp), save_embedding_layers=False)
    move_dir_no_clobber(tmp, path)
    return path


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return found[-1] if found else None


def save_checkpoint(ckpt_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, history: list[float],
                    keep: int = 2) -> Path:
    """LoRA weights, optimizer and scheduler state and the step, written atomically (a
    temporary directory, then a rename); the ``keep`` newest are kept."""
    import torch

    final = ckpt_dir / f"step-{step:06d}"
    tmp = ckpt_dir / f"step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), save_embedding_layers=False)  # no hub look-up (see save_peft_dir)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "state.pt")
    (tmp / "progress.json").write_text(json.dumps({"step": step, "history": history}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir: Path, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, list[float]]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise FinetuneError(f"--resume: no checkpoint in {ckpt_dir}")
    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress = json.loads((ckpt / "progress.json").read_text())
    return int(progress["step"]), list(progress["history"])

"""``--speculative compare`` for ``bench typing`` and ``bench humaneval``: speculative decoding
against plain decoding, on the same requests in the same run.

After each request the model answered, its prompt is generated again once per mode (off,
lookup, and draft when a draft model is loaded), in the worker, in a rotating order. The prompt's
KV cells are all reused by then, so the modes differ only in generation; the request's own
prompt time is added to each for its latency (the draft model's share of it only to ``draft``).
The re-runs have no time budget, so every mode generates the same tokens (checked: a mode that
answers otherwise than plain greedy decoding is counted). Pairing each request with itself
keeps a loaded machine's noise out of the comparison better than two separate runs would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..engine.model import Generation, LlamaRunner
from ..engine.prompt import Prompt
from ..engine.service import CompletionEngine
from ..engine.shaping import CompletionShaper
from . import percentile

NO_BUDGET_MS = 600_000.0


@dataclass
class ModeRuns:
    tokens: int = 0
    gen_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0
    different: int = 0
    """Answers not token-for-token the plain greedy one."""


class SpeculationComparison:
    def __init__(self, engine: CompletionEngine) -> None:
        self.engine = engine
        has_draft = engine.call(lambda r: r.draft is not None).result()
        self.modes = ["off", "lookup"] + (["draft"] if has_draft else [])
        self.runs = {m: ModeRuns() for m in self.modes}
        self.requests = 0

    def add(self, prompt: Prompt, gen: Generation) -> None:
        """Generate ``prompt`` (the request that gave ``gen``) again each way."""
        cc = self.engine.config.completion
        # the length the engine chose for its next request (answer_length auto), as near as can be seen
        length = str(dict(self.engine.status().answer_length).get("using", cc.answer_length))
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, cc.max_lines, length)
        shift = self.requests % len(self.modes)
        order = self.modes[shift:] + self.modes[:shift]

        def each_way(runner: LlamaRunner) -> dict[str, Generation]:
            saved, out = runner.speculation, {}
            try:
                for mode in order:
                    runner.speculation = dataclasses.replace(saved, mode=mode)
                    out[mode] = runner.generate(prompt, max_tokens=cc.max_tokens, stop_at=shaper.stop_at,
                                                time_budget_ms=NO_BUDGET_MS)
            finally:
                runner.speculation = saved
            return out

        out: dict[str, Generation] = self.engine.call(each_way).result()  # type: ignore[assignment]
        self.requests += 1
        plain = out["off"]
        own_prompt_ms = gen.prompt_ms - gen.draft_prompt_ms
        for mode, g in out.items():
            runs = self.runs[mode]
            runs.tokens += g.n_generated
            runs.gen_ms.append(g.gen_ms)
            runs.latency_ms.append(own_prompt_ms + (gen.draft_prompt_ms if mode == "draft" else 0.0) + g.gen_ms)
            runs.drafted += g.n_drafted
            runs.accepted += g.n_accepted
            runs.different += int(g.text != plain.text or g.n_generated != plain.n_generated)

    def report(self) -> list[str]:
        if not self.requests:
            return ["speculative decoding: no request reached the model"]
        lines = [f"speculative decoding: {self.requests} model requests generated again each way "
                 "(same prompt, greedy, no time budget):",
                 f"  {'mode':7s} {'tokens':>7s} {'tokens/s':>9s} {'gen p50':>8s} {'gen p95':>8s} "
                 f"{'latency p50':>12s} {'p95':>7s} {'accepted/drafted':>17s} {'same answer':>12s}"]
        base = self.runs["off"]
        for mode, r in self.runs.items():
            total = sum(r.gen_ms)
            rate = 1000 * r.tokens / total if total else float("nan")
            accept = f"{r.accepted}/{r.drafted}" if mode != "off" else "-"
            lines.append(f"  {mode:7s} {r.tokens:7d} {rate:9.1f} {percentile(r.gen_ms, 50):6.0f}ms "
                         f"{percentile(r.gen_ms, 95):6.0f}ms {percentile(r.latency_ms, 50):10.0f}ms "
                         f"{percentile(r.latency_ms, 95):5.0f}ms {accept:>17s} "
                         f"{self.requests - r.different:5d}/{self.requests}")
        plain_ms = sum(base.gen_ms)
        for mode, r in self.runs.items():
            mode_ms = sum(r.gen_ms)
            if mode != "off" and mode_ms > 0:
                lines.append(f"  {mode}: generation {plain_ms / mode_ms:.2f}x the speed of plain decoding")
        return lines

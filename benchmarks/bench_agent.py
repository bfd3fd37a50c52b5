"""Benchmark the live agent loop: time per step against step index over a long tool loop on the mini K2.

The mini K2 answers small tasks in two or three steps, so the steps are driven: a logits processor forces
each turn to a scripted K2-format calculator call (``<think>step i</think>`` then a tool-call section with
``functions.calculator:i`` and ``{"expression": "i+1"}``), the real calculator runs, its result goes back
as a ``tool`` message, and the last turn is a plain answer. Everything else is the real loop: rendering,
generation with the recorder on (the processor only masks the logits), parsing, tools, recording. The
per-step time is measured from one ``on_step`` call to the next (render, feed, decode, parse, tool).

Paths compared:
- ``after``: ``workbench.agent.loop.run_agent`` (the KV cache kept across steps);
- ``before``: the loop as it was before the cache was kept (``git show BEFORE_REV:workbench/agent/loop.py``),
  which re-reads the whole conversation at every step. Quadratic: this is the slow part of the run.

The mini K2's 4096-token window holds ~90 such steps (~44 tokens each); the benchmark raises
``config.max_position_embeddings`` to 8192 (its default RoPE computes any position; only the loop's window
check reads that number), as K2's 256k window holds sessions of hundreds of steps.

Goal: per-step time flat within 1.5x from step 10 to step 100 (``flat_ratio``: the median time of steps
95-104 over that of steps 10-19, both ~10-step windows so one noisy step does not decide it).

The old loop's cost grows with the square of the steps; ``--before-steps`` times it over fewer steps
(default: all), and ``after_first_n_total_s`` is the new loop's time over the same first steps.

    python benchmarks/bench_agent.py --out benchmarks/results [--steps 110] [--before-steps N] [--skip-before]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REV = "ff366be"  # main before the KV-cached loop
WINDOW = 8192


class ScriptedTurns:
    """A logits processor that forces each ``generate`` call to emit the next scripted turn (token ids)."""

    def __init__(self, turns: list[list[int]]) -> None:
        self.turns, self.turn, self.start = turns, -1, -1

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        n = input_ids.shape[1]
        if self.start < 0 or n < self.start or n - self.start >= len(self.turns[self.turn]):
            self.turn, self.start = self.turn + 1, n
        want = self.turns[self.turn][n - self.start]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, want] = 0.0
        return forced


def scripted_turns(tok: Any, steps: int) -> list[list[int]]:
    sc, cb, ab, ce, se = (
        "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>",
        "<|tool_calls_section_end|>",
    )  # fmt: skip
    texts = [
        f'<think>step {i}</think>{sc}{cb}functions.calculator:{i}{ab}{{"expression": "{i}+1"}}{ce}{se}<|im_end|>'
        for i in range(steps - 1)
    ] + [f"<think>done</think>The answer is {steps}.<|im_end|>"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def old_loop() -> types.ModuleType:
    """The agent loop module as it was at ``BEFORE_REV`` (its imports resolve to today's workbench)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BEFORE_REV}:workbench/agent/loop.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    mod = types.ModuleType("workbench_agent_loop_before")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{BEFORE_REV}:workbench/agent/loop.py", "exec"), mod.__dict__)
    return mod


def run(run_agent: Any, model: Any, tok: Any, steps: int, name: str) -> dict[str, Any]:
    from workbench.agent.tools import make_toolbox

    marks = [time.perf_counter()]
    t0 = marks[0]

    def step(log: Any) -> None:
        marks.append(time.perf_counter())
        print(f"{name} step {log.step}: {marks[-1] - marks[-2]:.2f} s", file=sys.stderr, flush=True)

    ep = run_agent(
        model, tok, "Count up with the calculator.", make_toolbox(["calculator"]), max_steps=steps,
        max_new_tokens=64, generate_kwargs={"logits_processor": [ScriptedTurns(scripted_turns(tok, steps))]},
        on_step=step,
    )  # fmt: skip
    total = time.perf_counter() - t0
    per_step = [b - a for a, b in itertools.pairwise(marks)]
    early = statistics.median(per_step[10:20]) if len(per_step) >= 20 else None
    late = statistics.median(per_step[95:105]) if len(per_step) >= 105 else None
    return {
        "steps": len(ep.steps),
        "stop_reason": ep.stop_reason,
        "tokens": int(ep.record.n_tokens),
        "generated_tokens": int(ep.record.generated.sum()),
        "total_s": round(total, 3),
        "per_step_s": [round(x, 4) for x in per_step],
        "median_step_10_19_s": None if early is None else round(early, 4),
        "median_step_95_104_s": None if late is None else round(late, 4),
        "flat_ratio": None if late is None or early is None else round(late / early, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=110, help="tool-loop steps (>= 105 for the flatness figure)")
    ap.add_argument("--skip-before", action="store_true", help="do not time the old (quadratic) loop")
    ap.add_argument("--skip-after", action="store_true", help="time only the old loop (e.g. in a second process)")
    ap.add_argument("--before-steps", type=int, default=None, help="steps of the old loop (default: --steps)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from workbench.agent.loop import run_agent
    from workbench.models import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model("k2-mini")
    # ~44 tokens a step: the mini K2's 4096-token window holds ~90 steps. Its default RoPE computes any
    # position and only the loop's window check reads this, so the window is raised for the long run.
    model.config.max_position_embeddings = WINDOW
    result: dict[str, Any] = {
        "benchmark": "agent_loop",
        "model": "k2-mini (fp32, CPU)",
        "driven_by": "logits processor forcing scripted calculator calls (see the module docstring)",
        "torch_threads": args.threads,
        "window_tokens": WINDOW,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_start": list(os.getloadavg()),
        "goal": "per-step time flat within 1.5x from step 10 to step 100 (flat_ratio <= 1.5)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "agent.json"

    def write() -> None:
        result["load_average_end"] = list(os.getloadavg())
        path.write_text(json.dumps(result, indent=1) + "\n")

    if not args.skip_after:
        result["after"] = run(run_agent, model, tok, args.steps, "after")
        write()
        print(f"after: {result['after']['total_s']} s, flat_ratio {result['after']['flat_ratio']}", file=sys.stderr)
    if not args.skip_before:
        n = args.before_steps or args.steps
        before = run(old_loop().run_agent, model, tok, n, "before")
        result["before"] = {"source": f"git show {BEFORE_REV}:workbench/agent/loop.py"} | before
        if "after" in result:
            result["after_first_n_total_s"] = round(sum(result["after"]["per_step_s"][:n]), 3)
            result["speedup_first_n"] = round(before["total_s"] / result["after_first_n_total_s"], 2)
        write()
        print(f"before ({n} steps): {before['total_s']} s", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()

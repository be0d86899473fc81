"""Stage-1 frontier on the default model: our plan (AmoebaLLM DP depth + FLAP width) against every
baseline, no fine-tuning, one evaluator.

Shapes: d24, d20, d15 at full width, and full depth at the widths giving about 80 %, 65 % and 50 %
of the non-embedding parameters (the pairs d24/w82, d20/w61, d15/w48 have equal sizes, so depth and
width pruning meet at each size). Perplexity on held-out wikitext-2 valid tokens (after the 8192 the
plan was calibrated on), PIQA-dev zero-shot acc / acc_norm.

    .venv/bin/python bench/frontier.py [--plan smollm2-135m] [--limit 400] [--text-tokens 16384]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PIQA, PIQA_LABELS, RESULTS, WIKITEXT, describe, machine, require_data, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=400, help="PIQA items (of 900)")
    ap.add_argument("--text-tokens", type=int, default=16384)
    ap.add_argument("--baselines", default="shortgpt,angular,last,magnitude,activation")
    args = ap.parse_args()
    require_data()

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekit.cli.elastic.frontier import print_points
    from edgekit.elastic.frontier import compare, plot_png, plot_terminal
    from edgekit.elastic.plan import load_plan
    from edgekit.evaluation.settings import EvalSettings
    from edgekit.shapes import Shape

    console = Console()
    m = machine()
    plan = load_plan(args.plan)
    n = plan.geometry.num_layers
    widths = [w for w in plan.width.grid if w < 100]
    g = plan.geometry
    full = g.heads_per_group
    grid = [Shape(n, 100, full)] + [Shape(d, 100, full) for d in (24, 20, 15)] + [g.coupled(n, w) for w in widths]
    skip = plan.held_out_skip(WIKITEXT)
    if not skip:
        raise SystemExit(f"plan {plan.name} was not calibrated on {WIKITEXT}")
    settings = EvalSettings(str(WIKITEXT), args.text_tokens, 512, 512, mc=str(PIQA), mc_labels=str(PIQA_LABELS),
                            mc_limit=args.limit)  # fmt: skip
    kinds = [k for k in args.baselines.split(",") if k]
    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:  # fmt: skip
        task = progress.add_task("baselines", total=None)
        points = compare(
            [plan], grid, settings, kinds, WIKITEXT,
            on_stage=lambda s: progress.update(task, description=s),
            on_total=lambda t: progress.update(task, description="evaluating", total=t, completed=0),
            on_point=lambda p: progress.advance(task),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    evaluation = {
        "text": str(WIKITEXT),
        "skip_tokens": skip,
        "max_tokens": args.text_tokens,
        "windows": "512/512",
        "mc": str(PIQA),
        "items": args.limit,
    }
    print_points(points, evaluation)
    console.print(plot_terminal(points, "ppl"), markup=False, highlight=False)
    console.print(f"[dim]{describe(m)}; {seconds / 60:.1f} min[/dim]")

    # The acceptance check: the DP depth plan beats every depth baseline at every depth.
    ours = {p.shape: p for p in points if p.label == plan.depth.method + "/" + plan.width.method}
    verdicts = []
    for p in points:
        if p.label != "amoeba/flap" and p.shape in ours and p.ffn == 100 and p.depth < n:
            verdicts.append({"shape": p.shape, "baseline": p.label, "ours_ppl": ours[p.shape].ppl, "ppl": p.ppl,
                             "ours_better": ours[p.shape].ppl < p.ppl})  # fmt: skip
    for v in verdicts:
        mark = "[green]ours better[/green]" if v["ours_better"] else "[red]baseline better[/red]"
        console.print(f"{v['shape']}: ours {v['ours_ppl']:.2f} vs {v['baseline']} {v['ppl']:.2f}  {mark}")
    png = RESULTS / "frontier.png"
    plot_png(points, png, f"{plan.model.name}: accuracy vs size, no fine-tuning")
    path = write_result(
        "frontier",
        {
            "machine": m,
            "plan": {
                "name": plan.name,
                "depth": plan.depth.method,
                "scorer": plan.depth.scorer,
                "width": plan.width.method,
                "calibration": plan.calibration.__dict__,
                "plan_seconds": plan.depth.seconds + plan.width.seconds,
            },  # fmt: skip
            "evaluation": evaluation,
            "points": [p.to_dict() for p in points],
            "depth_verdicts": verdicts,
            "seconds": round(seconds, 1),
        },
    )
    console.print(f"written {path} and {png}")


if __name__ == "__main__":
    main()

"""Stage 2 benchmark: one-for-all SMOL (ours) against stage 1 alone, one plain LoRA for all shapes,
per-shape LoRA, and the ablations; evaluated on the same shapes and data.

Runs live in bench/runs/<name> and resume from their checkpoints, and each finished run's figures
are written to bench/results/one_for_all.json at once, so the benchmark can be run in pieces:

    .venv/bin/python bench/one_for_all.py --steps 250 [--only ours,single-lora] [--device cpu]
                                          [--stop-at 100]

--stop-at N compares every run at step N of the same --steps schedule (same learning rate, data and
shapes up to there), reported as `<run>@N`: an equal-budget comparison that costs N steps per run.
Ours at N is read back from its own checkpoint when its full run has passed N; per-shape gets the
token budget of ours@N.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PIQA, PIQA_LABELS, RESULTS, ROOT, SHARED_DATA, WIKITEXT, describe, machine, write_result  # noqa: E402

SHAPES = ["d30-w100", "d24-w100", "d20-w100", "d15-w100", "d30-w82", "d30-w61", "d30-w48"]
PYDOC_TRAIN = SHARED_DATA / "pydoc" / "train.txt"
PYDOC_DEV = SHARED_DATA / "pydoc" / "dev.txt"
RESULT_FILE = RESULTS / "one_for_all.json"
RUNS = {
    "ours": [],  # the recipe: a shared always-on LoRA beside the routed experts, whole-LoRA mixing
    # candidate: the full shape also distils from the original model (weight 1 beside its data loss), so it
    # keeps what it knew while learning pydoc
    "ours-anchor": ["train.anchor=1.0"],
    "ours-routed": ["smol.shared=false"],  # routed experts only
    "ours-factors": ["smol.shared=false", "smol.mixing=factors"],  # the first SMOL form (mixed A and B)
    "single-lora": ["smol.gated=false", "smol.shared=false"],
    # one plain LoRA as wide as ours' active adapters at any one shape (shared + top-2 routed = 3 x rank 6)
    "single-lora-r18": ["smol.gated=false", "smol.shared=false", "smol.rank=18", "smol.alpha=36"],
    # candidate at the same active rank as single-lora-r18: a wide shared expert (rank 12) beside 4 routed
    # experts of rank 3 (top-2), scaling alpha / rank = 2 as everywhere else
    "ours-shared12": ["smol.rank=3", "smol.alpha=6", "smol.shared_rank=12"],
    "no-distill": ["train.distill=false"],
    "no-balance": ["train.balance=false"],
    "no-sandwich": ["train.sandwich=false"],
}


def overrides(steps: int, device: str) -> list[str]:
    return [f"train.steps={steps}", "train.checkpoint_every=25", f"train.device={device}"]


def settings(limit: int):
    from edgekit.evaluation.settings import EvalSettings

    return EvalSettings(str(WIKITEXT), 16384, 512, None, str(PYDOC_DEV), str(PIQA), str(PIQA_LABELS), limit)


def evaluate(elastic, plan, tokenizer, limit: int) -> dict:
    from edgekit.elastic.accuracy import evaluate_shapes

    return evaluate_shapes(elastic, tokenizer, plan, [plan.shape(s) for s in SHAPES], settings(limit))["shapes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=250, help="steps of the one-for-all runs")
    ap.add_argument("--only", default="", help="comma-separated run names (stage1, ours, single-lora, per-shape, ...)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=400, help="PIQA items")
    ap.add_argument("--stop-at", type=int, default=None, help="compare every run at this step of the schedule")
    ap.add_argument("--report", action="store_true", help="print the tables from the results on disk and exit")
    ap.add_argument("--ours", default="ours", help="with --report: the run the others are compared with")
    args = ap.parse_args()
    if args.report:
        results = json.loads(RESULT_FILE.read_text())
        print_table(results)
        print(markdown(results, args.stop_at, args.ours))
        return
    stop = args.stop_at if args.stop_at and args.stop_at < args.steps else None
    tag = f"@{stop}" if stop else ""

    from transformers import AutoTokenizer

    from edgekit.elastic.accuracy import evaluate_shapes
    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.train import prepare_run, train

    results = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.is_file() else {"runs": {}}
    results["machine"] = machine()
    here = describe(results["machine"])  # recorded with each run: the file gathers runs from several hosts
    touched: set[str] = set()
    only = [x for x in args.only.split(",") if x]
    plan = load_plan("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(base_folder(plan))

    def save() -> None:
        # Two pieces of the benchmark may run side by side (one thread each): merge into what is on disk
        # instead of overwriting the other's runs.
        on_disk = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.is_file() else {"runs": {}}
        on_disk["runs"].update({k: results["runs"][k] for k in touched})
        on_disk["machine"] = results["machine"]
        write_result("one_for_all", on_disk)

    if (not only or "stage1" in only) and "stage1" not in results["runs"]:
        start = time.perf_counter()
        table = evaluate(load_elastic(plan), plan, tokenizer, args.limit)
        results["runs"]["stage1"] = {
            "shapes": table, "eval_seconds": round(time.perf_counter() - start, 1), "threads": threads(),
            "machine": here,
        }  # fmt: skip
        touched.add("stage1")
        save()
    for name, extra in RUNS.items():
        if (only and name not in only) or name + tag in results["runs"]:
            continue
        recipe = load_recipe("smollm2-135m", overrides(args.steps, args.device) + extra, SHARED_DATA)
        run_dir = ROOT / "runs" / name
        trainer = prepare_run(recipe, run_dir, resume=True)
        if stop and trainer.state.step > stop:  # this run went past N already: read N back from its checkpoint
            trainer.load_checkpoint(run_dir / "checkpoints" / f"step-{stop:06d}")
        log = lambda r, n=name: print(f"{n} step {r.step + 1}: {r.losses}", flush=True)  # noqa: E731
        state = train(trainer, on_step=log, stop_at=stop)
        start = time.perf_counter()
        table = evaluate(trainer.model, plan, tokenizer, args.limit)
        results["runs"][name + tag] = {
            "overrides": extra, "steps": state.step, "tokens": state.tokens, "train_seconds": round(state.seconds, 1),
            "shape_samples": state.step * recipe.train.shapes_per_step, "shapes": table,
            "eval_seconds": round(time.perf_counter() - start, 1), "threads": threads(),
            "machine": here,
        }  # fmt: skip
        touched.add(name + tag)
        save()
    if not only or "per-shape" in only:
        shapes_per_step = load_recipe(
            "smollm2-135m", overrides(args.steps, args.device), SHARED_DATA
        ).train.shapes_per_step
        grid = len(plan.grid())
        # the same number of tokens per shape as ours spends in total, divided by the grid size
        per_steps = max(1, (stop or args.steps) * shapes_per_step // grid)
        per = results["runs"].setdefault("per-shape" + tag, {"shapes": {}, "steps_each": per_steps, "machine": here})
        touched.add("per-shape" + tag)
        for shape in SHAPES:
            if shape in per["shapes"]:
                continue
            extra = [f"train.grid=[{shape}]", "train.sandwich=false", "train.shapes_per_step=1", "smol.gated=false",
                     "smol.shared=false",
                     "train.teacher=" + ("inplace" if shape == "d30-w100" else "frozen")]  # fmt: skip
            recipe = load_recipe("smollm2-135m", overrides(per_steps, args.device) + extra, SHARED_DATA)
            trainer = prepare_run(recipe, ROOT / "runs" / f"per-shape{tag}-{shape}", resume=True)
            state = train(trainer)
            row = evaluate_shapes(trainer.model, tokenizer, plan, [plan.shape(shape)], settings(args.limit))["shapes"][
                shape
            ]
            per["shapes"][shape] = {
                **row, "train_seconds": round(state.seconds, 1), "tokens": state.tokens, "steps": state.step,
                "threads": threads(),
            }  # fmt: skip
            save()
    print_table(results)
    print(describe(results["machine"]))


def threads() -> int:
    import torch

    return torch.get_num_threads()


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    runs = results["runs"]
    table = Table(title="stage 2: held-out wikitext ppl / pydoc-dev ppl / PIQA acc_norm per shape")
    table.add_column("run")
    for s in SHAPES:
        table.add_column(s, justify="right")
    for name, run in runs.items():
        cells = []
        for s in SHAPES:
            row = run["shapes"].get(s)
            cells.append("-" if not row else f"{row['ppl']:.1f} / {row['domain_ppl']:.1f} / {row['acc_norm']:.3f}")
        table.add_row(name, *cells)
    Console().print(table)


METRICS = (("ppl", False), ("domain_ppl", False), ("acc_norm", True))  # (key, higher is better)


def wins(ours: dict, other: dict) -> dict[str, list[str]]:
    """Per metric, the shapes (present in both) where ours is strictly better."""
    out: dict[str, list[str]] = {}
    for key, higher in METRICS:
        shared = [s for s in SHAPES if s in ours["shapes"] and s in other["shapes"]]
        out[key] = [s for s in shared if (ours["shapes"][s][key] > other["shapes"][s][key]) == higher
                    and ours["shapes"][s][key] != other["shapes"][s][key]]  # fmt: skip
    return out


def averages(run: dict, shapes: list[str]) -> dict[str, float]:
    """Geometric mean for perplexities (one bad shape must not swamp the rest), arithmetic for accuracy."""
    import math

    rows = [run["shapes"][s] for s in shapes]
    return {
        "ppl": math.exp(sum(math.log(r["ppl"]) for r in rows) / len(rows)),
        "domain_ppl": math.exp(sum(math.log(r["domain_ppl"]) for r in rows) / len(rows)),
        "acc_norm": sum(r["acc_norm"] for r in rows) / len(rows),
    }


def markdown(results: dict, stop: int | None, name: str = "ours") -> str:
    """The tables of `--report`: every run per shape, then `name` against every other run of the same budget."""
    return runs_table(results) + "\n\n" + comparison(results, stop, name)


def runs_table(results: dict) -> str:
    """Every run per shape, with the machine each ran on."""
    runs = results["runs"]
    lines = ["| run | steps | tokens | train s | " + " | ".join(SHAPES) + " |", "| --- " * (4 + len(SHAPES)) + "|"]
    for row_name, run in runs.items():
        cells = [f"{r['ppl']:.1f} / {r['domain_ppl']:.1f} / {r['acc_norm']:.3f}" if (r := run["shapes"].get(s)) else "-"
                 for s in SHAPES]  # fmt: skip
        if row_name.startswith("per-shape"):
            each = list(run["shapes"].values())
            steps = f"{run['steps_each']} per shape"
            tokens = f"{sum(r['tokens'] for r in each):,} ({len(each)} shape{'s' * (len(each) != 1)})"
            secs = f"{sum(r['train_seconds'] for r in each):,.0f}"
        else:
            steps, tokens = str(run.get("steps", 0)), f"{run.get('tokens', 0):,}"
            secs = f"{run['train_seconds']:,.0f}" if "train_seconds" in run else "0"
        lines.append(f"| {row_name} | {steps} | {tokens} | {secs} | " + " | ".join(cells) + " |")
    machines: dict[str, list[str]] = {}
    for row_name, run in runs.items():
        machines.setdefault(run.get("machine", "machine not recorded"), []).append(row_name)
    lines += ["", *(f"- {', '.join(names)}: {where}" for where, names in machines.items())]
    return "\n".join(lines)


def comparison(results: dict, stop: int | None, name: str = "ours") -> str:
    """`name` (read at step `stop`, or run to the end when there is no stop) against every other run of the
    same budget and stage 1: wins per metric, and averages over the shapes both have."""
    runs = results["runs"]
    tag = f"@{stop}" if stop else ""
    ours = runs.get(name + tag)
    if ours is None:
        return f"(no run {name + tag})"
    lines = [f"| {name}{tag} against | shapes compared | better wikitext ppl | better pydoc ppl | better PIQA |"
             " avg wikitext ppl (geo) ours / them | avg pydoc ppl (geo) | avg PIQA |", "| --- " * 8 + "|"]  # fmt: skip
    for other, run in runs.items():
        same_budget = other.endswith(tag) if tag else "@" not in other
        if other == name + tag or not (same_budget or other == "stage1"):
            continue
        shared = [s for s in SHAPES if s in run["shapes"] and s in ours["shapes"]]
        if not shared:
            continue
        w = wins(ours, run)
        a, b = averages(ours, shared), averages(run, shared)
        lines.append(
            f"| {other} | {len(shared)} | {len(w['ppl'])} | {len(w['domain_ppl'])} | {len(w['acc_norm'])} | "
            f"{a['ppl']:.1f} / {b['ppl']:.1f} | {a['domain_ppl']:.1f} / {b['domain_ppl']:.1f} | "
            f"{a['acc_norm']:.3f} / {b['acc_norm']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

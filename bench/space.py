"""The whole space (depth x FFN x heads) against the coupled grid: default model, stage 1 (no training), dev data.

(a) at 80 %, 65 % and 50 % of the non-embedding parameters (0.5 % slack): the space's pick (the best
    predicted perplexity within the budget, as deploy ranks) against the best grid shape within it (every
    grid shape measured, the best kept: the old grid at its strongest); dev perplexity and PIQA acc_norm,
    both measured;
(b) at 80 %, 65 % and 50 % of the full model's ms/token on this host (its LUT, ORT int4 CPU): the same
    among shapes predicted to fit, with each pick compiled and measured here, and what a real
    `edgekit deploy` shipped (it measures, and steps down or up);
(c) the accuracy predictor's error on shapes left out of its fit: its stored validation, and --extra more
    drawn at random from the space, on the predictor's own dev tokens;
(d) the search: shapes, frontier size, seconds;
(e) with --plan-time: a fresh `edgekit elastic plan` (DP depth, width ranking, predictor) timed here.

Dev perplexity: wikitext-2 valid, --text-tokens tokens after those the plan and its predictor read;
PIQA: the first --limit dev items.

    .venv/bin/python bench/space.py [--only a,b,c,d,e] [--limit 300] [--text-tokens 8192] [--extra 20]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PIQA, PIQA_LABELS, RESULTS, WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

MODEL = "smollm2-135m"
FRACTIONS = (0.80, 0.65, 0.50)
SLACK = 1.005  # "80 % of the parameters" admits d24 of 30 layers, which the final norm puts a hair above 0.8


class Evaluator:
    """Held-out dev perplexity and PIQA acc_norm of shapes of one source, each measured once."""

    def __init__(self, source: Any, text_tokens: int, limit: int) -> None:
        from edgekit.evaluation.data import load_piqa, read_text
        from edgekit.evaluation.model_io import bos, encode

        self.source, self.plan = source, source.plan
        self.model, self.tokenizer = source.load(), source.tokenizer()
        self.skip = self.plan.held_out_skip(WIKITEXT)
        corpus = read_text(WIKITEXT)
        ids = encode(self.tokenizer, corpus[: (self.skip + text_tokens) * 8])[self.skip :]
        self.ids = bos(self.tokenizer) + ids[:text_tokens]
        self.items = load_piqa(PIQA, PIQA_LABELS, limit=limit)
        self.rows: dict[str, dict[str, float]] = {}

    def ppl(self, shape: Any) -> float:
        from edgekit.evaluation.perplexity import perplexity_of_ids

        row = self.rows.setdefault(shape.name, {})
        if "ppl" not in row:
            row["ppl"] = perplexity_of_ids(self.model.eval().at(shape), self.ids, 512, 512).ppl
            print(f"  {shape.name}: ppl {row['ppl']:.2f}", flush=True)
        return row["ppl"]

    def acc_norm(self, shape: Any) -> float:
        from edgekit.evaluation.multiple_choice import multiple_choice

        row = self.rows.setdefault(shape.name, {})
        if "acc_norm" not in row:
            row["acc_norm"] = multiple_choice(self.model.eval().at(shape), self.tokenizer, self.items, False).acc_norm
            print(f"  {shape.name}: acc_norm {row['acc_norm']:.3f}", flush=True)
        return row["acc_norm"]

    def describe(self) -> dict[str, Any]:
        return {"ppl": f"{WIKITEXT.name}, {len(self.ids)} tokens after {self.skip}, windows 512/512",
                "mc": f"{PIQA.name}, first {len(self.items)} items, zero-shot acc_norm"}  # fmt: skip


def pick(ev: Evaluator, shapes: list[Any], predicted: dict[Any, float], grid: list[Any]) -> dict[str, Any]:
    """The space's pick (best predicted) and the grid's best measured, both measured."""
    g = ev.plan.geometry
    full = g.non_embedding_params(ev.plan.full)
    space_pick = min(shapes, key=lambda s: predicted[s])
    in_grid = [s for s in grid if s in set(shapes)]
    grid_pick = min(in_grid, key=ev.ppl) if in_grid else None

    def row(s: Any) -> dict[str, Any]:
        return {"shape": s.name, "params_pct": round(100 * g.non_embedding_params(s) / full, 1),
                "predicted_ppl": round(predicted[s], 2), "ppl": round(ev.ppl(s), 2),
                "acc_norm": round(ev.acc_norm(s), 4)}  # fmt: skip

    out = {"space": row(space_pick), "grid": row(grid_pick) if grid_pick else None, "grid_candidates": len(in_grid)}
    if grid_pick:
        out["ppl_ratio_grid_over_space"] = round(ev.ppl(grid_pick) / ev.ppl(space_pick), 3)
        out["acc_norm_gain"] = round(ev.acc_norm(space_pick) - ev.acc_norm(grid_pick), 4)
    return out


def size_budgets(ev: Evaluator, predicted: dict[Any, float]) -> list[dict[str, Any]]:
    g, plan = ev.plan.geometry, ev.plan
    full = g.non_embedding_params(plan.full)
    rows = []
    for frac in FRACTIONS:
        print(f"size budget {frac:.0%}", flush=True)
        shapes = [s for s in plan.space() if g.non_embedding_params(s) <= frac * full * SLACK]
        rows.append({"budget": f"{frac:.0%} params", **pick(ev, shapes, predicted, plan.grid())})
        print(rows[-1], flush=True)
    return rows


def measure_latency(ev: Evaluator, shape: Any, work: Path) -> float:
    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.engines import get_engine

    hf, model = work / f"hf-{shape.name}", work / f"ort-{shape.name}"
    ev.source.extract(shape, hf)
    model.mkdir()
    get_engine("ort").compile(hf, model, "int4", "cpu")
    return measure_folder("ort", model, "cpu", MeasureSettings(runs=5, warmup=2, prompt_lens=())).decode_ms


def latency_budgets(ev: Evaluator, predicted: dict[Any, float], lut: Any) -> list[dict[str, Any]]:
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.pipeline import DeployRequest, deploy

    plan = ev.plan
    full_ms = lut.predict(plan.full).decode_ms
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frac in FRACTIONS:
            print(f"latency budget {frac:.0%}", flush=True)
            limit = frac * full_ms
            shapes = [s for s in plan.space() if lut.predict(s).decode_ms <= limit]
            row: dict[str, Any] = {"budget": f"{frac:.0%} of full ({limit:.2f} ms/token predicted)",
                                   **pick(ev, shapes, predicted, plan.grid())}  # fmt: skip
            for side in ("space", "grid"):
                if row[side]:
                    s = plan.shape(row[side]["shape"])
                    row[side]["predicted_ms"] = round(lut.predict(s).decode_ms, 3)
                    row[side]["measured_ms"] = round(measure_latency(ev, s, Path(tmp) / f"{side}-{frac}"), 3)
            start = time.perf_counter()
            # stage-1 shapes are all far from the full model: this compares the search, not what should ship
            dep = deploy(DeployRequest(target="host", budget=parse_budget(f"{frac * 100:.0f}%"), plan=MODEL,
                                       out=Path(tmp) / f"deploy-{frac}", allow_degraded=True))  # fmt: skip
            m = dep.manifest
            shipped = plan.shape(dep.shape)
            row["deploy"] = {
                "shape": dep.shape, "measured_ms": m.measured.decode_ms, "budget_ms": m.budget.resolved.ms_per_token,
                "stepped_down_from": [s["shape"] for s in m.stepped_down_from],
                "stepped_up": [{k: u[k] for k in ("from", "shape", "measured_decode_ms", "kept")}
                               for u in m.stepped_up],
                "ppl": round(ev.ppl(shipped), 2), "acc_norm": round(ev.acc_norm(shipped), 4),
                "wall_s": round(time.perf_counter() - start, 1), "search": m.search,
            }  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    return rows


def predictor_error(ev: Evaluator, extra: int) -> dict[str, Any]:
    from edgekit.elastic.predictor import USEFUL, dev_tokens, error_stats
    from edgekit.evaluation.perplexity import perplexity_of_ids

    predictor = ev.source.predictor()
    plan = ev.plan
    dev = dev_tokens(plan, ev.tokenizer, WIKITEXT, predictor.data["tokens"], predictor.data["window"])
    seen = set(predictor.measured)
    shapes = random.Random(1).sample([s for s in plan.space() if s.name not in seen], extra)
    measured, guessed = [], []
    for s in shapes:
        measured.append(
            perplexity_of_ids(ev.model.eval().at(s), dev.ids, dev.record["window"], dev.record["window"]).ppl
        )
        guessed.append(predictor.predict(plan, s))
    full = predictor.measured[plan.full.name]
    useful = [i for i, m in enumerate(measured) if m <= USEFUL * full]
    return {
        "stored_validation": {k: v for k, v in predictor.validation.items() if k != "per_shape"},
        "extra": {"n": extra, "all": error_stats(guessed, measured),
                  "useful": error_stats([guessed[i] for i in useful], [measured[i] for i in useful]),
                  "per_shape": {s.name: {"ppl": round(m, 2), "predicted": round(p, 2)}
                                for s, m, p in zip(shapes, measured, guessed, strict=True)}},
        "description": predictor.describe(),
    }  # fmt: skip


def search_time(source: Any, lut: Any) -> dict[str, Any]:
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.choose import candidates

    plan = source.plan
    start = time.perf_counter()
    space = plan.space()
    ranking = source.ranking(space)
    rows = candidates(lut, space, ranking, parse_budget("65%").resolve(lut.predict(plan.full).decode_ms), 128)
    return {"shapes": len(rows), "frontier": sum(r.frontier for r in rows),
            "seconds": round(time.perf_counter() - start, 3), "grid_shapes": len(plan.grid())}  # fmt: skip


def plan_time() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        argv = [sys.executable, "-m", "edgekit", "elastic", "plan", "--model", MODEL, "--calib", str(WIKITEXT),
                "--out", str(Path(tmp) / "plan"), "--json"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    data = json.loads(done.stdout)
    return {"wall_s": round(wall, 1), "depth_s": data["depth"]["seconds"], "width_s": data["width"]["seconds"],
            "predictor_s": data.get("predictor_seconds"), "scorer_calls": data["depth"]["scorer_calls"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="a,b,c,d")
    ap.add_argument("--limit", type=int, default=300, help="PIQA items (of 900)")
    ap.add_argument("--text-tokens", type=int, default=8192)
    ap.add_argument("--extra", type=int, default=20, help="shapes drawn at random to check the predictor on")
    ap.add_argument("--plan-time", action="store_true", help="also time a fresh `edgekit elastic plan` (10 min)")
    args = ap.parse_args()
    require_data()
    only = set(args.only.split(",")) | ({"e"} if args.plan_time else set())

    from edgekit.deployment.lut import find_lut
    from edgekit.deployment.resolve import resolve_target
    from edgekit.elastic.source import Source

    path = RESULTS / "space.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = machine()
    source = Source.resolve(plan=MODEL)
    predictor = source.predictor()
    plan = source.plan
    predicted = {s: predictor.predict(plan, s) for s in plan.space()}
    ev = Evaluator(source, args.text_tokens, args.limit)
    results["evaluation"] = ev.describe()
    res = resolve_target("host", "ort", "int4")
    lut = find_lut(res.target_name, "ort", MODEL, "int4")
    if "d" in only:
        results["search"] = search_time(source, lut)
        write_result("space", results)
    if "c" in only:
        results["predictor"] = predictor_error(ev, args.extra)
        write_result("space", results)
    if "a" in only:
        results["size"] = size_budgets(ev, predicted)
        write_result("space", results)
    if "b" in only:
        results["latency"] = {"lut": f"{lut.key} ({lut.status})", "rows": latency_budgets(ev, predicted, lut)}
        write_result("space", results)
    if "e" in only:
        results["plan_time"] = plan_time()
        write_result("space", results)
    results["measured"] = {**results.get("measured", {}), **ev.rows}
    write_result("space", results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "measured")}, indent=1))
    print(describe(results["machine"]))


if __name__ == "__main__":
    main()

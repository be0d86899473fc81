"""How many calibration tokens the DP depth scorer needs: plans at several budgets, same held-out test.

For each budget, run AmoebaLLM's DP (perplexity scorer) on the first N tokens of wikitext-2 valid,
then score the chosen layer sets for d24/d20/d15 on held-out wikitext-2 tokens (after the first
8192, which no plan reads). Prints the wall time, the sets, and the held-out perplexity per depth.

    .venv/bin/python bench/plan_budget.py [--budgets 512,1024,2048]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

DEPTHS = (24, 20, 15)
HELD_OUT_SKIP = 8192


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budgets", default="512,1024,2048")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    args = ap.parse_args()
    require_data()

    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoConfig, AutoTokenizer

    from edgekit.elastic.depth import select_depth
    from edgekit.elastic.model import ElasticModel
    from edgekit.elastic.selection import SEQ_LEN, calibration_ids
    from edgekit.evaluation.data import read_text
    from edgekit.evaluation.perplexity import perplexity
    from edgekit.models.reference import local_folder, resolve
    from edgekit.models.weights import Weights
    from edgekit.shapes import Shape

    console = Console()
    m = machine()
    folder = local_folder(resolve(args.model))
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = ElasticModel.from_hf_state(config, Weights(folder).state()).eval()
    text = read_text(WIKITEXT)
    budgets = [int(b) for b in args.budgets.split(",")]
    ids = calibration_ids(tokenizer, text, max(budgets), SEQ_LEN, str(WIKITEXT))
    runs = []
    for budget in budgets:
        plan = select_depth(model, ids[: budget // SEQ_LEN], "amoeba", "ppl", 15)
        held = {}
        for d in DEPTHS:
            model.layer_sets[d] = plan.layer_sets[d]
            held[d] = perplexity(
                model.at(Shape(d, 100, model.geometry.heads_per_group)), tokenizer, text, max_length=512, stride=512,
                max_tokens=args.eval_tokens, skip_tokens=HELD_OUT_SKIP, progress=False,
            ).ppl  # fmt: skip
        runs.append(
            {
                "budget_tokens": budget,
                "scorer_calls": plan.scorer_calls,
                "seconds": round(plan.seconds, 1),
                "removed": {d: sorted(set(range(30)) - set(plan.layer_sets[d])) for d in DEPTHS},
                "held_out_ppl": {d: round(held[d], 3) for d in DEPTHS},
            }
        )
        console.print(f"budget {budget}: {plan.seconds:.0f} s, held-out ppl {runs[-1]['held_out_ppl']}")
        torch.manual_seed(0)
    table = Table(title=f"DP depth plan vs calibration budget ({describe(m)})")
    table.add_column("tokens", justify="right")
    table.add_column("DP wall s", justify="right")
    for d in DEPTHS:
        table.add_column(f"d{d} held-out ppl", justify="right")
    for r in runs:
        table.add_row(str(r["budget_tokens"]), f"{r['seconds']:.0f}", *(f"{r['held_out_ppl'][d]:.2f}" for d in DEPTHS))
    console.print(table)
    for r in runs:
        console.print(
            f"{r['budget_tokens']:>5} tokens removes: " + "; ".join(f"d{d}: {r['removed'][d]}" for d in DEPTHS)
        )
    path = write_result(
        "plan_budget",
        {
            "machine": m,
            "model": args.model,
            "calibration": f"{WIKITEXT.name}, first N tokens, sequences of {SEQ_LEN}, scored on their second half",
            "held_out": f"{WIKITEXT.name} tokens {HELD_OUT_SKIP}..{HELD_OUT_SKIP + args.eval_tokens}, windows 512/512",
            "runs": runs,
        },
    )
    console.print(f"written {path}")


if __name__ == "__main__":
    main()

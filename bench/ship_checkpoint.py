"""Turn the finished one-for-all run of bench/one_for_all.py ("ours") into the elastic checkpoint that
ships with edgekit: SMOL weights in fp16, the plan, the recipe that reproduces it, and the accuracy
table over the plan's whole grid (what `deploy` ranks shapes by).

    .venv/bin/python bench/ship_checkpoint.py [--run bench/runs/ours] [--out edgekit/data/checkpoints/smollm2-135m]

The recipe written into the checkpoint is edgekit/data/recipes/smollm2-135m.yaml as shipped, its data named
relative to the data folder ($EDGEKIT_DATASETS, default ../shared/data beside the repository); the
checkpoint records every data file's name and sha256.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, SHARED_DATA  # noqa: E402
from one_for_all import overrides  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "ours")
    ap.add_argument("--out", type=Path, default=ROOT.parent / "edgekit" / "data" / "checkpoints" / "smollm2-135m")
    ap.add_argument("--steps", type=int, default=250)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from edgekit.elastic.accuracy import evaluate_shapes
    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.checkpoint import write_checkpoint
    from edgekit.elastic.recipe import DATA_KEYS, load_recipe
    from edgekit.elastic.train import data_files, prepare_run

    ran = load_recipe("smollm2-135m", overrides(args.steps, "auto"), SHARED_DATA)  # as bench/one_for_all.py ran it
    trainer = prepare_run(ran, args.run, resume=True)
    state = trainer.state
    if state.step < args.steps:
        raise SystemExit(f"{args.run} is at step {state.step} of {args.steps}: finish it with bench/one_for_all.py")
    import torch

    with torch.no_grad():  # measure what ships: the adapters as stored, in fp16
        for p in trainer.smol.parameters():
            p.copy_(p.half().float())
    shipped = load_recipe("smollm2-135m", [], SHARED_DATA)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_folder(trainer.plan))
    accuracy = evaluate_shapes(trainer.model, tokenizer, trainer.plan, trainer.grid, shipped.eval_settings(),
                               on_shape=lambda s: print(f"evaluating {s}", flush=True))  # fmt: skip
    training = {
        "steps": state.step,
        "tokens": state.tokens,
        "seconds": round(state.seconds, 1),
        "device": str(trainer.device),
        "run": "bench/one_for_all.py --only ours",
        "eval_seconds": round(time.perf_counter() - start, 1),
        "data": data_files(shipped, tuple(f"{a}.{b}" for a, b in DATA_KEYS)),
    }
    path = write_checkpoint(
        args.out, trainer.plan, trainer.smol, shipped.to_dict(), training, accuracy, half=True, force=True
    )
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()

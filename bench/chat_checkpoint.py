"""The chat-preserving one-for-all checkpoint that ships with edgekit: its teacher data, the full-length run,
and packing the run as the shipped checkpoint.

    .venv/bin/python bench/chat_checkpoint.py data                    # the base model's replies (30 min, 2 cores)
    .venv/bin/python bench/chat_checkpoint.py train --variant lora18  # 250 steps (about 2 h on 2 cores; resumes)
    .venv/bin/python bench/chat_checkpoint.py pack --variant lora18   # -> edgekit/data/checkpoints/smollm2-135m
    .venv/bin/python bench/chat_checkpoint.py table                   # its accuracy table from bench/chat.py's run

`data` writes bench/data/chat/teacher-smollm2-135m.jsonl (committed, with its sidecar): replies to the train
part of chat/prompts.jsonl (the first --count of them; its dev tenth is never used) and to --headings prompts
made from pydoc/train.txt's section titles. `train` runs the shipped recipe (edgekit/data/recipes/
smollm2-135m.yaml) on a data folder that holds the benchmark datasets and that file, with the variant's
overrides: `lora18` (the recipe as written: one plain LoRA of rank 18, as wide as SMOL's active adapters) or
`smol` (SMOL's gated experts with a shared expert, the recipe's option). `pack` stores the adapters in fp16,
fits the text and chat accuracy predictors on them, and measures the accuracy table (chat metrics included) on
shapes spread along the predicted frontier.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, SHARED_DATA  # noqa: E402

TEACHER = ROOT / "data" / "chat" / "teacher-smollm2-135m.jsonl"
DATA = ROOT / "runs" / "chat-data"  # the recipe's data folder: the datasets and the teacher replies
VARIANTS = {
    "lora18": [],  # the recipe as written: one plain LoRA of rank 18
    "smol": ["smol.gated=true", "smol.experts=4", "smol.rank=6", "smol.alpha=12", "smol.top_k=2", "smol.shared=true"],
}


def data_folder() -> Path:
    """bench/runs/chat-data: links to the shared datasets, and chat/ with the prompts and the teacher replies."""
    (DATA / "chat").mkdir(parents=True, exist_ok=True)
    for name in ("pydoc", "wikitext-2", "piqa"):
        link = DATA / name
        if not link.exists():
            link.symlink_to(SHARED_DATA / name)
    teachers = [(DATA / "chat" / t.name, t) for t in sorted(TEACHER.parent.glob("*.jsonl"))]  # every committed one
    for link, target in ((DATA / "chat" / "prompts.jsonl", SHARED_DATA / "chat" / "prompts.jsonl"), *teachers):
        if not link.exists():
            link.symlink_to(target.resolve())
    return DATA


def make_data(count: int, headings: int) -> None:
    TEACHER.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "edgekit", "elastic", "teacher-data", "--prompts",
            str(SHARED_DATA / "chat" / "prompts.jsonl"), "--count", str(count), "--from-text",
            str(SHARED_DATA / "pydoc" / "train.txt"), "--headings", str(headings), "--batch-size", "16",
            "--max-new-tokens", "160", "--out", str(TEACHER), "--force"]  # fmt: skip
    subprocess.run(argv, check=True)


def run_dir(variant: str) -> Path:
    return ROOT / "runs" / f"chat-{variant}"


def train(variant: str, steps: int) -> None:
    data_folder()
    out = run_dir(variant)
    argv = [sys.executable, "-m", "edgekit", "elastic", "train", "--recipe", "smollm2-135m", "--data-dir",
            str(DATA), "--out", str(out), "--no-eval", *(["--resume"] if out.exists() else []),
            f"train.steps={steps}", "train.checkpoint_every=25", *VARIANTS[variant]]  # fmt: skip
    subprocess.run(argv, check=True)


def pack(variant: str, steps: int, out: Path) -> None:
    from edgekit.elastic.checkpoint import write_checkpoint
    from edgekit.elastic.recipe import DATA_KEYS, load_recipe
    from edgekit.elastic.train import RunResult, data_files, evaluate_checkpoint, prepare_run

    os.environ.setdefault("EDGEKIT_DATASETS", str(data_folder()))
    overrides = [f"train.steps={steps}", "train.checkpoint_every=25", *VARIANTS[variant]]
    recipe = load_recipe("smollm2-135m", overrides, DATA)
    trainer = prepare_run(recipe, run_dir(variant), resume=True)
    state = trainer.state
    if state.step < steps:
        raise SystemExit(f"{run_dir(variant)} is at step {state.step} of {steps}: finish it with `train` first")
    training = {"steps": state.step, "tokens": state.tokens, "seconds": round(state.seconds, 1),
                "device": str(trainer.device), "run": f"bench/chat_checkpoint.py train --variant {variant}",
                "variant": variant, "data": data_files(recipe, tuple(f"{a}.{b}" for a, b in DATA_KEYS))}  # fmt: skip
    path = write_checkpoint(out, trainer.plan, trainer.smol, recipe.to_dict(), training, None, half=True, force=True)
    start = time.perf_counter()
    result = RunResult(path, training, None)
    evaluate_checkpoint(result, trainer.grid, recipe.eval_settings(), on_shape=lambda s: print(f"  {s}", flush=True))
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 2**20:.1f} MiB); predictors and table in {time.perf_counter() - start:.0f} s")
    print(f"table on {', '.join(result.accuracy['shapes'])}; notes: {result.notes}")


def table(out: Path, results: Path) -> None:
    """The shipped checkpoint's accuracy table from bench/chat.py's measurements of it (fp32, SMOL merged): the
    shapes deploy picks at each budget, with text perplexity, PIQA and the chat metrics, and beside them the
    same shapes' int4 artifacts (GPTQ, as deploy builds them) through ONNX Runtime GenAI. `pack` measures a table
    of its own; this one reuses the benchmark's instead of measuring the same shapes twice."""
    import json

    from edgekit.artifacts import utc_now
    from edgekit.elastic.accuracy import FORMAT
    from edgekit.elastic.checkpoint import load_checkpoint, set_accuracy

    bench = json.loads(results.read_text())
    ckpt = load_checkpoint(out)
    if bench["sources"]["new"] != f"elastic checkpoint {ckpt.name}" and "shipped" not in bench["sources"]["new"]:
        raise SystemExit(f"{results} measured {bench['sources']['new']}, not {ckpt.name}")
    metrics = ("ppl", "acc_norm", "chat_ppl", "answer_rate", "agreement")
    rows = {}
    for shape, row in bench["rows"].items():
        if "new" not in row:
            continue
        rows[shape] = {"params": ckpt.plan.geometry.non_embedding_params(ckpt.plan.shape(shape)),
                       **{m: row["new"][m] for m in metrics}, "seconds": row["new"]["seconds"]}  # fmt: skip
        if "new_int4" in row:
            rows[shape]["int4"] = {m: row["new_int4"][m] for m in metrics}
    data = {**bench["evaluation"], "source": f"bench/chat.py ({results.name}, {bench['machine']['date'][:10]})",
            "int4": "ONNX Runtime GenAI int4 artifact as deploy builds it (GPTQ), through its own logits"}  # fmt: skip
    set_accuracy(ckpt, {"format": FORMAT, "shapes": rows, "data": data, "created": utc_now()})
    print(f"{ckpt.path}: accuracy table on {', '.join(rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("data", "train", "pack", "table"))
    ap.add_argument("--variant", choices=tuple(VARIANTS), default="lora18")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--count", type=int, default=300, help="prompts of chat/prompts.jsonl's train part")
    ap.add_argument("--headings", type=int, default=60, help="prompts made from pydoc/train.txt headings")
    ap.add_argument("--out", type=Path, default=ROOT.parent / "edgekit" / "data" / "checkpoints" / "smollm2-135m")
    args = ap.parse_args()
    if args.step == "data":
        make_data(args.count, args.headings)
    elif args.step == "train":
        train(args.variant, args.steps)
    elif args.step == "pack":
        pack(args.variant, args.steps, args.out)
    else:
        table(args.out, ROOT / "results" / "chat.json")


if __name__ == "__main__":
    main()

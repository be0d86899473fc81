"""TrimLLM on the Python documentation: the domain checkpoint against the general checkpoint, stage 1 and
per-depth domain fine-tuning, at depths 24, 20 and 15 of the default model.

    .venv/bin/python bench/trim.py trim                  # the shipped trim recipe (1-2 h on 2 cores; resumes)
    .venv/bin/python bench/trim.py baselines             # one domain fine-tune per depth, the same tokens each
    .venv/bin/python bench/trim.py measure [--depths 24,20,15]
    .venv/bin/python bench/trim.py chat-data             # stage 2's chat: API questions, teacher replies (15 min)
    .venv/bin/python bench/trim.py heal                  # stage 2: chat healing of the trim run's depths (1 h)
    .venv/bin/python bench/trim.py pack                  # -> edgekit/data/checkpoints/smollm2-135m-pydoc
    .venv/bin/python bench/trim.py all                   # the four in order (each resumes or skips what is done)
    ... --run bench/runs/trim-pydoc-i24                   # another trim run (e.g. trim.interval=24 train.steps=420)

`trim` runs edgekit/data/recipes/smollm2-135m-pydoc.yaml (from the shipped general checkpoint's adapters,
pydoc/train.txt with a quarter of each batch the base model's replies, one layer dropped every 8 steps down to
depth 15). `baselines` trains, for each depth, the plan's stage-1 layer set at full width on the same data,
from the same adapters, for the same steps and tokens (one shape per step, no distillation: the usual "prune,
then fine-tune" recipe). `measure` scores at each depth: domain perplexity (pydoc/dev.txt), general
perplexity (WikiText-2 valid, past what the plan read), PIQA dev acc_norm, in fp32 with the adapters merged,
and the depth's decode ms/token as an ORT GenAI int4 artifact on this host (the four sources at one depth
share one architecture, so one build measures them all). Figures go to bench/results/trim.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PIQA, PIQA_LABELS, ROOT, SHARED_DATA, WIKITEXT, describe, machine, require_data, write_result  # noqa: E402

RECIPE = "smollm2-135m-pydoc"
MODEL = "smollm2-135m"
DOMAIN_DEV = SHARED_DATA / "pydoc" / "dev.txt"
TRIM_RUN = ROOT / "runs" / "trim-pydoc"
SHIPPED = ROOT.parent / "edgekit" / "data" / "checkpoints" / RECIPE


def data_folder() -> Path:
    """The recipe's data folder: the shared datasets, and chat/ with the committed teacher replies."""
    from chat_checkpoint import data_folder as chat_data  # bench/ is on the path (above)

    return chat_data()


def run_trim(extra: list[str]) -> None:
    if (TRIM_RUN / "elastic" / "manifest.json").is_file():
        print(f"the trim run is finished ({TRIM_RUN}/elastic)", flush=True)
        return
    argv = [sys.executable, "-m", "edgekit", "elastic", "trim", "--recipe", RECIPE, "--data-dir", str(data_folder()),
            "--out", str(TRIM_RUN), "--no-eval", *(["--resume"] if TRIM_RUN.exists() else []), *extra]  # fmt: skip
    subprocess.run(argv, check=True)


HEAL_RECIPE = "smollm2-135m-pydoc-chat"
HEAL_RUN = ROOT / "runs" / "trim-pydoc-chat"
API_TEACHER = ROOT / "data" / "chat" / "teacher-pydoc-api-smollm2-135m.jsonl"
MIX_TEACHER = ROOT / "data" / "chat" / "teacher-pydoc-mix-smollm2-135m.jsonl"


def make_chat_data(api: int) -> None:
    """Stage 2's chat data: the base model's replies to `api` questions about what pydoc/train.txt documents,
    after the general teacher replies stage 1 trained on (one JSONL, as data.chat takes one file)."""
    from chat_checkpoint import TEACHER

    if not API_TEACHER.is_file():
        argv = [sys.executable, "-m", "edgekit", "elastic", "teacher-data", "--from-text",
                str(SHARED_DATA / "pydoc" / "train.txt"), "--headings", "0", "--api", str(api), "--out",
                str(API_TEACHER)]  # fmt: skip
        subprocess.run(argv, check=True)
    MIX_TEACHER.write_text(TEACHER.read_text() + API_TEACHER.read_text())
    print(f"{MIX_TEACHER}: {len(MIX_TEACHER.read_text().splitlines())} replies", flush=True)


def run_heal(stage1: Path, extra: list[str]) -> None:
    """Stage 2 from stage 1's finished run: its depths, healed on chat (edgekit/data/recipes/<HEAL_RECIPE>)."""
    if (HEAL_RUN / "elastic" / "manifest.json").is_file():
        print(f"the healing run is finished ({HEAL_RUN}/elastic)", flush=True)
        return
    argv = [sys.executable, "-m", "edgekit", "elastic", "trim", "--recipe", HEAL_RECIPE, "--data-dir",
            str(data_folder()), "--out", str(HEAL_RUN), "--no-eval", *(["--resume"] if HEAL_RUN.exists() else []),
            f"train.init={finished(stage1, 'the trim run')}", *extra]  # fmt: skip
    subprocess.run(argv, check=True)


def baseline_dir(depth: int) -> Path:
    """The per-depth fine-tune measured at `depth`: the one with the domain checkpoint's tokens where it has
    finished, else the first, shorter one (as many steps as the first 150-step trim run)."""
    equal = ROOT / "runs" / f"trim-perdepth-d{depth}" / "heal"
    return equal if (equal / "elastic" / "manifest.json").is_file() else ROOT / "runs" / f"trim-baseline-d{depth}"


def per_depth(extra: list[str], depth: int, out: Path, recipe: str, steps: int, init: Path | None) -> None:
    """One domain fine-tune of depth `depth` alone: the plan's stage-1 layer set at full width, one shape per
    step, no distillation (the usual "prune, then fine-tune" recipe), on `recipe`'s data for `steps` steps."""
    if (out / "elastic" / "manifest.json").is_file():
        return
    argv = [sys.executable, "-m", "edgekit", "elastic", "train", "--recipe", recipe, "--data-dir",
            str(data_folder()), "--out", str(out), "--no-eval", *(["--resume"] if out.exists() else []),
            "trim.depth=0", f"train.grid=[d{depth}-f100-h3]", "train.sandwich=false", "train.distill=false",
            "train.shapes_per_step=1", f"train.steps={steps}", *([f"train.init={init}"] if init else []),
            *extra]  # fmt: skip
    subprocess.run(argv, check=True)


def run_baselines(depths: list[int], extra: list[str], stage1: Path) -> None:
    """Per depth, the domain checkpoint's two stages on one depth: stage 1's recipe for as many steps as the
    stage-1 run made, then (when the measured run is a healing run) the healing recipe for its steps, from the
    first. Each depth so reads the tokens the domain checkpoint read, on the same data mix."""
    heal = TRIM_RUN if (TRIM_RUN / "elastic" / "manifest.json").is_file() else None
    healing = heal is not None and bool(load_manifest(heal)["domain"].get("inherited_drops"))
    if healing:  # the stage 1 the healing run went on from, wherever --stage1 points
        import yaml

        stage1 = Path(yaml.safe_load((heal / "recipe.yaml").read_text())["train"]["init"]).parent
    steps1 = training_of(finished(stage1, "the trim run"))["steps"]
    for depth in depths:
        folder = ROOT / "runs" / f"trim-perdepth-d{depth}"
        per_depth(extra, depth, folder / "stage1", RECIPE, steps1, None)
        if healing:
            per_depth(extra, depth, folder / "heal", HEAL_RECIPE, training_of(heal / "elastic")["steps"],
                      folder / "stage1" / "elastic")  # fmt: skip


def per_depth_training(depth: int) -> dict[str, Any]:
    """The per-depth fine-tune's training: both stages' steps, tokens and time where it has two."""
    run = baseline_dir(depth)
    stages = [run.parent / "stage1", run] if run.name == "heal" else [run]
    done = [training_of(stage / "elastic") for stage in stages]
    return {"steps": sum(t["steps"] for t in done), "tokens": sum(t["tokens"] for t in done),
            "seconds": round(sum(t["seconds"] for t in done), 1), "device": done[-1]["device"],
            "run": str(run.relative_to(ROOT.parent))}  # fmt: skip


def load_manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "elastic" / "manifest.json").read_text())


class Scorer:
    """Domain ppl, general ppl and PIQA of any model the evaluators take, on data read once."""

    def __init__(self, text_tokens: int, limit: int) -> None:
        from edgekit.elastic.source import Source
        from edgekit.evaluation.data import load_piqa, read_text
        from edgekit.evaluation.model_io import bos, encode

        plan = Source.resolve(plan=MODEL)
        self.tokenizer = plan.tokenizer()
        skip = plan.plan.held_out_skip(WIKITEXT)
        self.general = (
            bos(self.tokenizer)
            + encode(self.tokenizer, read_text(WIKITEXT)[: (skip + text_tokens) * 8])[skip : skip + text_tokens]
        )
        self.domain = bos(self.tokenizer) + encode(self.tokenizer, read_text(DOMAIN_DEV))[:text_tokens]
        self.items = load_piqa(PIQA, PIQA_LABELS, limit=limit)
        self.describe = {"domain_ppl": f"{DOMAIN_DEV.name}, first {len(self.domain)} tokens, windows 512/512",
                         "ppl": f"{WIKITEXT.name}, {len(self.general)} tokens after {skip}, windows 512/512",
                         "acc_norm": f"{PIQA.name}, first {len(self.items)} items, zero-shot"}  # fmt: skip

    def row(self, model: Any) -> dict[str, Any]:
        from edgekit.evaluation.multiple_choice import multiple_choice
        from edgekit.evaluation.perplexity import perplexity_of_ids

        start = time.perf_counter()
        return {"domain_ppl": round(perplexity_of_ids(model, self.domain, 512, 512).ppl, 3),
                "ppl": round(perplexity_of_ids(model, self.general, 512, 512).ppl, 3),
                "acc_norm": round(multiple_choice(model, self.tokenizer, self.items, False).acc_norm, 4),
                "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def decode_ms(source: Any, shape: Any, work: Path) -> float:
    from edgekit.deployment.measure import MeasureSettings, measure_folder
    from edgekit.engines import get_engine

    hf, built = work / f"hf-{shape.name}", work / f"ort-{shape.name}"
    source.extract(shape, hf)
    built.mkdir()
    get_engine("ort").compile(hf, built, "int4", "cpu")
    return round(measure_folder("ort", built, "cpu", MeasureSettings(runs=5, warmup=2, prompt_lens=())).decode_ms, 3)


def training_of(path: Path) -> dict[str, Any]:
    manifest = json.loads((path / "manifest.json").read_text())
    t = manifest["training"]
    return {"steps": t["steps"], "tokens": t["tokens"], "seconds": t["seconds"], "device": t["device"]}


def finished(run: Path, what: str) -> Path:
    """RUN/elastic of a finished run: trim and train write it at their end."""
    if not (run / "elastic" / "manifest.json").is_file():
        raise SystemExit(f"{what} has not finished ({run}/elastic is missing): run its step first")
    return run / "elastic"


def measure(depths: list[int], text_tokens: int, limit: int) -> None:
    from edgekit.elastic.source import Source
    from edgekit.shapes import Shape

    require_data()
    domain = Source.resolve(elastic=str(finished(TRIM_RUN, "the trim run")))
    sources = {"trimllm": domain, "general": Source.resolve(elastic=MODEL), "stage1": Source.resolve(plan=MODEL)}
    scorer = Scorer(text_tokens, limit)
    path = ROOT / "results" / "trim.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    trainings = {"trimllm": training_of(domain.checkpoint.path)}
    for depth in depths:
        if (baseline_dir(depth) / "elastic").is_dir():
            trainings[f"per-depth d{depth}"] = per_depth_training(depth)
    measured_before = (results.get("training") or {}).get("trimllm")  # the earlier run's, before it is replaced
    results.update({"machine": machine(), "evaluation": scorer.describe, "training": trainings,
                    "drop_order": [d["layer"] for d in domain.checkpoint.manifest["domain"]["drops"]],
                    "sources": {k: s.label for k, s in sources.items()}})  # fmt: skip
    rows = results.setdefault("rows", {})
    run = str(TRIM_RUN.relative_to(ROOT.parent))
    before = results.get("trim_run", "bench/runs/trim-pydoc")
    if before != run:  # another run: its domain rows are kept beside, this run's are measured
        results["previous_run"] = {"run": before, "training": measured_before}
        for row in rows.values():
            if "trimllm" in row:
                row["trimllm-previous"] = row.pop("trimllm")
    results["trim_run"] = run
    # a healing run (stage 2) goes on from the earlier run's checkpoint: its tokens come on top of those
    results["continues_previous"] = bool(domain.checkpoint.manifest["domain"].get("inherited_drops"))
    with tempfile.TemporaryDirectory(prefix="edgekit-trim-bench-") as tmp:
        for depth in [30, *depths]:
            shape = Shape(depth, 100, 3)
            row = rows.setdefault(f"d{depth}", {})
            todo = dict(sources)
            run = baseline_dir(depth)
            if depth != 30 and (run / "elastic").is_dir():  # the shorter run's row stays beside the longer's
                todo["per-depth" if run.name == "heal" else "per-depth-short"] = Source.resolve(
                    elastic=str(run / "elastic")
                )
            for name, source in todo.items():
                if name not in row:
                    print(f"d{depth} {name}", flush=True)
                    row[name] = scorer.row(source.load().eval().at(shape))
                    print(f"  {row[name]}", flush=True)
                    write_result("trim", results)
            if "decode_ms" not in row:
                row["decode_ms"] = decode_ms(domain, shape, Path(tmp))
                print(f"  int4 decode {row['decode_ms']} ms/token", flush=True)
                write_result("trim", results)
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    names = ["trimllm", "general", "stage1", "per-depth", "per-depth-short"]
    print(f"{'depth':>5} {'ms/tok':>7} " + " ".join(f"{n + ' dom/gen/piqa':>28}" for n in names))
    for depth, row in results["rows"].items():
        cells = []
        for n in names:
            r = row.get(n)
            cells.append(f"{r['domain_ppl']:>9.2f} {r['ppl']:>8.2f} {r['acc_norm']:>8.3f}" if r else f"{'-':>28}")
        print(f"{depth:>5} {row.get('decode_ms', float('nan')):>7.2f} " + " ".join(f"{c:>28}" for c in cells))
    print(describe(results["machine"]))


def pack(text_tokens: int, limit: int) -> None:
    """The domain checkpoint as shipped: the finished run's, adapters in fp16, measured on every depth (each
    perplexity text cut to `text_tokens`, PIQA to `limit` items: 16 depths are measured)."""
    import dataclasses

    from edgekit.elastic.checkpoint import load_checkpoint, load_smol, set_accuracy, write_checkpoint
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.source import Source
    from edgekit.elastic.trim import evaluate_depths

    run = load_checkpoint(finished(TRIM_RUN, "the trim run"))
    recipe = load_recipe(str(TRIM_RUN / "recipe.yaml"), data_dir=data_folder())
    manifest = run.manifest
    path = write_checkpoint(SHIPPED, run.plan, load_smol(run), portable(recipe.to_dict()), manifest["training"], None,
                            half=True, force=True, domain=manifest["domain"])  # fmt: skip
    source = Source.resolve(elastic=str(path))
    settings = dataclasses.replace(recipe.eval_settings(), text_max_tokens=text_tokens, mc_limit=limit)
    set_accuracy(source.checkpoint, evaluate_depths(source, settings))
    save_reference(source, settings)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 2**20:.1f} MiB)")


def portable(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as shipped: train.init (stage 1's run, which the manifest names by its hash too) relative to
    the repository, as bench/trim.py makes it, instead of this machine's absolute path."""
    init = Path(recipe["train"].get("init") or "")
    if init.is_absolute() and init.is_relative_to(ROOT.parent):
        recipe = {**recipe, "train": {**recipe["train"], "init": init.relative_to(ROOT.parent).as_posix()}}
    return recipe


def save_reference(source: Any, settings: Any) -> None:
    """Keep the chat reference the table was measured on in the checkpoint: deploy measures the artifact it
    builds on it (int4 against fp32), as it does for the general checkpoint."""
    from edgekit.elastic.accuracy import chat_reference

    ref = chat_reference(source.plan, settings)  # made while measuring, read from the cache
    if ref is not None:
        source.save_chat_reference(ref)


def main() -> None:
    global TRIM_RUN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("trim", "chat-data", "heal", "baselines", "measure", "pack", "all"))
    ap.add_argument("--api", type=int, default=320, help="chat-data: questions about the documented API")
    ap.add_argument("--stage1", type=Path, default=TRIM_RUN, help="heal: the trim run it starts from")
    ap.add_argument("--depths", default="24,20,15")
    ap.add_argument("--text-tokens", type=int, default=8192)
    ap.add_argument("--limit", type=int, default=400, help="PIQA dev items")
    ap.add_argument("--run", type=Path, help="the run measured and packed (default: the healing run once it has "
                    "finished, else the trim run); trim: the trim run's folder")  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="recipe overrides for trim and baselines")
    args = ap.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    stage1 = (args.stage1 if args.step != "all" or args.run is None else args.run).resolve()
    if args.step in ("trim", "all"):
        TRIM_RUN = (args.run or TRIM_RUN).resolve()
        run_trim(args.overrides)
    if args.step in ("chat-data", "all"):
        make_chat_data(args.api)
    if args.step in ("heal", "all"):
        run_heal(stage1, args.overrides)
    healed = (HEAL_RUN / "elastic" / "manifest.json").is_file()
    TRIM_RUN = (args.run or (HEAL_RUN if healed else TRIM_RUN)).resolve()
    if args.step in ("pack", "all"):
        pack(args.text_tokens, args.limit)
    if args.step in ("baselines", "all"):
        run_baselines(depths, args.overrides, stage1)
    if args.step in ("measure", "all"):
        measure(depths, args.text_tokens, args.limit)


if __name__ == "__main__":
    main()

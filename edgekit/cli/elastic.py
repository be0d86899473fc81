"""`edgekit elastic ...`: plan, show, extract, frontier."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, TextColumn
from rich.table import Table

from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError
from edgekit.models.registry import DEFAULT_MODEL
from edgekit.progress import bar

app = typer.Typer(help="Elastic subnets: plan layer sets and nested widths, cut shapes, compare methods.")


def _progress(*extra: Any) -> Progress:
    return bar(*extra)


def _refuse_existing(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise UsageError(f"{out_dir} exists: pass --force to replace it")


@app.command("plan")
def plan_cmd(
    calib: Path = typer.Option(..., "--calib", help="Calibration text file (plain text)."),
    out_dir: Path = typer.Option(..., "--out", help="Plan folder to write."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Cache name, local HF folder or hub id."),
    method: str = typer.Option("amoeba", "--method", help="Depth: amoeba (DP), shortgpt, angular, last."),
    scorer: str = typer.Option("ppl", "--scorer", help="DP scorer: ppl, angular, block-influence."),
    width_method: str = typer.Option("flap", "--width-method", help="Width ranking: flap, magnitude, activation."),
    calib_tokens: int = typer.Option(1024, "--calib-tokens", min=16, help="Tokens the depth scorer reads."),
    width_tokens: int = typer.Option(8192, "--width-tokens", min=16, help="Tokens for channel statistics."),
    seq_len: int = typer.Option(128, "--seq-len", min=8, help="Calibration sequence length."),
    min_depth: int | None = typer.Option(None, "--min-depth", help="Smallest depth offered (default: half)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing plan folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Select layers for every depth (DP) and rank widths; write a plan folder."""
    from edgekit.artifacts import atomic_dir
    from edgekit.elastic.plan import save_plan
    from edgekit.elastic.selection import PlanRequest, build_plan

    _refuse_existing(out_dir, force)
    req = PlanRequest(model, calib, method, scorer, width_method, calib_tokens, width_tokens, seq_len, min_depth)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("preparing", total=None)
        plan, perms = build_plan(
            req,
            on_stage=lambda label: progress.update(task, description=label),
            on_call=lambda: progress.advance(task),
            on_total=lambda total: progress.update(task, total=total or None, completed=0),
        )
    with atomic_dir(out_dir, replace=force) as tmp:
        save_plan(plan, perms, tmp)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**plan.to_json(), "path": str(out_dir), "wall_seconds": round(seconds, 1)})
        return
    _print_plan(plan)
    out.print(
        f"{plan.depth.scorer_calls} scorer calls, depth selection {plan.depth.seconds:.0f} s, "
        f"width ranking {plan.width.seconds:.0f} s, {seconds:.0f} s in all; plan written to {out_dir}"
    )


@app.command("show")
def show_cmd(
    plan: str = typer.Argument(..., help="Plan folder or shipped plan name."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print a plan: layer sets per depth, calibration scores, widths and how they map to heads/channels."""
    from edgekit.elastic.plan import load_plan

    p = load_plan(plan)
    if json_out:
        print_json({**p.to_json(), "path": str(p.path)})
        return
    _print_plan(p)


def _print_plan(plan: Any) -> None:
    g = plan.geometry
    n = g.num_layers
    out.print(
        f"[bold]{plan.name}[/bold]  model {plan.model.name} ({plan.model.architecture}, weights "
        f"{plan.model.digest[:12]})  depth: {plan.depth.method}"
        + (f"/{plan.depth.scorer}" if plan.depth.method == "amoeba" else "")
        + f"  width: {plan.width.method}  calibration: {plan.calibration.file} "
        f"({plan.calibration.depth_tokens} / {plan.calibration.width_tokens} tokens)"
    )
    table = Table(title="layer sets (full width)")
    table.add_column("depth", justify="right")
    table.add_column("removed layers")
    table.add_column("calib ppl", justify="right")
    for d in sorted(plan.layer_sets, reverse=True):
        removed = sorted(set(range(n)) - set(plan.layer_sets[d]))
        table.add_row(str(d), " ".join(map(str, removed)) or "-", f"{plan.depth.scores[d]:.2f}")
    out.print(table)
    widths = Table(title=f"widths (any of w{plan.width.min_width}..w100; default grid below)")
    for col in ("width", "FFN channels", "heads (q x kv groups)", "params at full depth"):
        widths.add_column(col, justify="right")
    full = g.non_embedding_params(plan.full)
    for w in plan.width.grid:
        dims = g.dims(w)
        p = g.non_embedding_params(type(plan.full)(n, w))
        widths.add_row(
            f"w{w}",
            str(dims.ffn),
            f"{dims.num_heads} ({dims.heads_per_group} x {dims.num_kv_heads})",
            f"{p / 1e6:.1f} M ({p / full:.0%})",
        )
    out.print(widths)


@app.command("extract")
def extract_cmd(
    shape: str = typer.Option(..., "--shape", help="Shape to cut, e.g. d20-w75, or 'full'."),
    plan: str | None = typer.Option(None, "--plan", help="Plan folder or shipped plan name."),
    elastic_ckpt: str | None = typer.Option(
        None, "--elastic", help="Elastic checkpoint: cut the shape with its SMOL mix merged."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the Hugging Face checkpoint."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: the plan's)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one shape of a plan as a standard Hugging Face checkpoint."""
    from dataclasses import asdict

    from edgekit.elastic.base_model import base_folder
    from edgekit.elastic.extract import extract
    from edgekit.elastic.plan import load_permutations, load_plan

    start = time.perf_counter()
    if (plan is None) == (elastic_ckpt is None):
        raise UsageError("give one of --plan (stage-1 shape) or --elastic (fine-tuned shape)")
    from edgekit.elastic.checkpoint import load_checkpoint, load_elastic_checkpoint

    ckpt = load_checkpoint(elastic_ckpt) if elastic_ckpt is not None else None
    if ckpt is not None:
        p = ckpt.plan
    else:
        assert plan is not None  # exactly one of --plan / --elastic, checked above
        p = load_plan(plan)
    s = p.shape(shape)
    _refuse_existing(out_dir, force)
    if ckpt is not None:
        from edgekit.elastic.extract import extract_elastic

        elastic, _ = load_elastic_checkpoint(ckpt, model)
        extra = {"elastic_checkpoint": {"path": str(ckpt.path), "smol": ckpt.smol_config.to_dict()}}
        info = extract_elastic(elastic, p, base_folder(p, model), s, out_dir, force=force, extra=extra)
    else:
        info = extract(p, load_permutations(p), base_folder(p, model), s, out_dir, force=force)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**asdict(info), "path": str(out_dir), "seconds": round(seconds, 3)})
        return
    out.print(
        f"{info.shape}: {len(info.layers)} layers, FFN {info.intermediate_size}, {info.num_heads} heads "
        f"({info.num_kv_heads} KV), {info.parameters / 1e6:.1f} M parameters "
        f"({info.non_embedding_parameters / 1e6:.1f} M non-embedding) -> {out_dir} in {seconds:.2f} s"
    )


@app.command("frontier")
def frontier_cmd(
    plans: list[str] = typer.Option(["smollm2-135m"], "--plan", help="Plan(s) to compare (repeatable)."),
    shapes: str | None = typer.Option(None, "--shapes", help="Grid, e.g. 'd30,24,20,15 x w100,82,61,48'."),
    baselines: str = typer.Option(
        "", "--baselines", help="Also build and compare: shortgpt,angular,last,magnitude,activation, or 'all'."
    ),
    calib: Path | None = typer.Option(None, "--calib", help="The plan's calibration text (needed for baselines)."),
    text: Path | None = typer.Option(None, "--text", help="Text for perplexity (held-out part if it is the calib)."),
    mc: Path | None = typer.Option(None, "--mc", help="Multiple-choice JSONL (PIQA layout)."),
    labels: Path | None = typer.Option(None, "--labels", help="PIQA labels file."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N items."),
    max_tokens: int = typer.Option(16384, "--max-tokens", min=2, help="Perplexity token budget."),
    max_length: int = typer.Option(512, "--max-length", min=2, help="Perplexity window."),
    stride: int = typer.Option(512, "--stride", min=1, help="Perplexity window step."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: the plan's)."),
    png: Path | None = typer.Option(None, "--png", help="Write the accuracy-size plot here."),
    json_out: bool = typer.Option(False, "--json", help="Print the points as JSON."),
) -> None:
    """Accuracy vs size of plan shapes, ours against baselines: a table, a terminal plot and a PNG."""
    from edgekit.elastic.frontier import EvalSettings, compare, plot_png, plot_terminal
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.selection import DEPTH_BASELINES, WIDTH_BASELINES
    from edgekit.evaluation.metrics import load_piqa, read_text

    if text is None and mc is None:
        raise UsageError("nothing to evaluate: give --text FILE (perplexity) and/or --mc FILE (multiple choice)")
    loaded = [load_plan(p) for p in plans]
    first = loaded[0]
    grid = first.grid(shapes)
    kinds = [k.strip() for k in baselines.split(",") if k.strip()]
    if kinds == ["all"]:
        kinds = list(DEPTH_BASELINES + WIDTH_BASELINES)
    if kinds and calib is None:
        raise UsageError("--baselines needs --calib: the calibration text the plan was made with")
    corpus = read_text(text) if text is not None else None
    items = load_piqa(mc, labels=labels, limit=limit) if mc is not None else None
    skip = first.held_out_skip(text) if text is not None else 0
    settings = EvalSettings(corpus, skip, max_tokens, max_length, stride, items)

    with _progress() as progress:
        task = progress.add_task("preparing", total=None)
        points = compare(
            loaded,
            grid,
            settings,
            kinds,
            calib,
            model,
            on_stage=lambda label: progress.update(task, description=label),
            on_total=lambda total: progress.update(task, description="evaluating", total=total, completed=0),
            on_point=lambda _p: progress.advance(task),
        )
    if png is not None:
        plot_png(points, png, f"{first.model.name}: accuracy vs size, no fine-tuning")
    result = {
        "model": first.model.name,
        "evaluation": {
            "text": str(text) if text else None,
            "skip_tokens": skip,
            "max_tokens": max_tokens,
            "windows": f"{max_length}/{stride}",
            "mc": str(mc) if mc else None,
            "items": len(items) if items else 0,
        },
        "points": [p.to_dict() for p in points],
    }
    if json_out:
        print_json(result)
        return
    _print_points(points, result["evaluation"])
    metric = "ppl" if corpus is not None else "acc_norm"
    out.print(plot_terminal(points, metric), markup=False, highlight=False)
    if png is not None:
        out.print(f"plot written to {png}")


def _print_points(points: list[Any], evaluation: dict[str, Any]) -> None:
    table = Table(title="accuracy vs size (no fine-tuning)")
    for col in ("method (depth/width)", "shape", "params", "ppl", "acc", "acc_norm", "s"):
        table.add_column(col, justify="left" if col.startswith("method") else "right")
    for p in sorted(points, key=lambda p: (-p.params, p.label)):
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        table.add_row(
            p.label + (" *" if p.shared_with else ""),
            p.shape,
            f"{p.params / 1e6:.1f} M ({p.param_fraction:.0%})",
            fmt(p.ppl, ".2f"),
            fmt(p.acc, ".3f"),
            fmt(p.acc_norm, ".3f"),
            f"{p.seconds:.0f}",
        )
    out.print(table)
    notes = []
    if evaluation["text"]:
        notes.append(
            f"ppl: {Path(evaluation['text']).name}, {evaluation['max_tokens']} tokens after the first "
            f"{evaluation['skip_tokens']} (held out from calibration), windows {evaluation['windows']}"
        )
    if evaluation["mc"]:
        notes.append(f"acc/acc_norm: {Path(evaluation['mc']).name}, {evaluation['items']} items, zero-shot")
    notes.append("* the same network as another row's (identical layers and channels), evaluated once")
    for n in notes:
        out.print(f"[dim]{n}[/dim]")


@app.command("train")
def train_cmd(
    recipe: str = typer.Option("smollm2-135m", "--recipe", help="Recipe YAML file or shipped recipe name."),
    out_dir: Path = typer.Option(..., "--out", help="Run folder: checkpoints, metrics.csv, and the result."),
    overrides: list[str] | None = typer.Argument(None, help="Recipe overrides, e.g. train.steps=200 smol.rank=8."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest checkpoint."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Measure the accuracy table at the end."),
    half: bool = typer.Option(False, "--half", help="Store the SMOL weights in fp16 (the shipped checkpoint)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """One-for-all SMOL fine-tuning of a plan; writes an elastic checkpoint to OUT/elastic."""
    from edgekit.elastic.checkpoint import write_checkpoint
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.train import prepare_run, train

    r = load_recipe(recipe, overrides or [])
    with err.status("loading plan, weights and data…"):
        trainer = prepare_run(r, out_dir, resume)
    start_step = trainer.state.step
    progress = _progress(TextColumn("{task.fields[losses]}"))
    with progress:
        task = progress.add_task("training", total=r.train.steps, completed=start_step, losses="")

        def on_step(result: Any) -> None:
            shown = " ".join(f"{k}:{v:.2f}" for k, v in result.losses.items())
            progress.update(task, advance=1, losses=shown)
            if not err.is_terminal and (result.step + 1) % r.train.log_every == 0:
                err.print(f"step {result.step + 1}/{r.train.steps} {shown} ({result.seconds:.1f} s/step)")

        state = train(trainer, on_step=on_step, on_stage=lambda s: progress.update(task, description=s))
    if trainer.rank != 0:  # under torchrun / accelerate launch, rank 0 writes and evaluates the result
        return
    training = {
        "steps": state.step,
        "tokens": state.tokens,
        "seconds": round(state.seconds, 1),
        "device": str(trainer.device),
        "resumed_from": start_step or None,
    }
    accuracy = None
    if evaluate:
        accuracy = _accuracy(trainer.model, trainer.plan, trainer.grid, r)
    ckpt = write_checkpoint(
        out_dir / "elastic", trainer.plan, trainer.smol, r.to_dict(), training, accuracy, half=half, force=True
    )
    summary = {"checkpoint": str(ckpt), "training": training, "accuracy": accuracy}
    if json_out:
        print_json(summary)
        return
    out.print(
        f"trained {state.step} steps ({state.tokens:,} tokens) in {state.seconds / 60:.1f} min on "
        f"{trainer.device}; elastic checkpoint: {ckpt}"
    )
    if accuracy:
        _print_accuracy(accuracy)


def _accuracy(elastic: Any, plan: Any, grid: list[Any], r: Any) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from edgekit.elastic.accuracy import evaluate_shapes
    from edgekit.elastic.base_model import base_folder

    tokenizer = AutoTokenizer.from_pretrained(base_folder(plan, r.model))
    e = r.eval
    with err.status("measuring the accuracy table…") as status:
        return evaluate_shapes(
            elastic, tokenizer, plan, grid, e.text, e.text_max_tokens, e.domain_text, e.mc, e.mc_labels, e.mc_limit,
            on_shape=lambda name: status.update(f"measuring the accuracy table: {name}…"), window=e.window,
        )  # fmt: skip


def _print_accuracy(accuracy: dict[str, Any]) -> None:
    table = Table(title="accuracy per shape")
    cols = ["shape", "params", "ppl", "domain_ppl", "acc", "acc_norm"]
    for col in cols:
        table.add_column(col, justify="left" if col == "shape" else "right")
    for name, row in accuracy["shapes"].items():
        cells = [name, f"{row['params'] / 1e6:.1f} M"]
        for key in cols[2:]:
            v = row.get(key)
            cells.append("-" if v is None else f"{v:.3f}" if key.startswith("acc") else f"{v:.2f}")
        table.add_row(*cells)
    out.print(table)
    for key, desc in accuracy.get("data", {}).items():
        if desc:
            out.print(f"[dim]{key}: {desc}[/dim]")


@app.command("teacher-data")
def teacher_data_cmd(
    out_file: Path = typer.Option(..., "--out", help="JSONL of prompt/response pairs to write."),
    from_text: Path = typer.Option(None, "--from-text", help="Make prompts from this corpus's section headings."),
    prompts: Path = typer.Option(None, "--prompts", help="Or: a file of prompts, one per line."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="The teacher: cache name, HF folder or hub id."),
    count: int = typer.Option(512, "--count", min=1, help="Prompts to answer (at most)."),
    max_new_tokens: int = typer.Option(160, "--max-new-tokens", min=8, help="Longest reply."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="0 for greedy."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts generated together."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """The base model's own replies to prompts, as JSONL a recipe mixes in (data.chat) to keep chat manners."""
    from edgekit.elastic.teacher_data import (
        TeacherSettings,
        generate_replies,
        prompts_from_file,
        prompts_from_text,
        write_jsonl,
    )
    from edgekit.elastic.train import resolve_device
    from edgekit.models.reference import local_folder, resolve

    if (from_text is None) == (prompts is None):
        raise UsageError("give one prompt source: --from-text CORPUS or --prompts FILE")
    _refuse_existing(out_file, force)
    asked = prompts_from_text(from_text, count, seed) if from_text else prompts_from_file(prompts, count)
    folder = local_folder(resolve(model))
    settings = TeacherSettings(max_new_tokens, temperature, 0.9, batch_size, seed)
    dev = resolve_device(device)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"teacher replies ({folder.name}, {dev})", total=len(asked))
        rows = generate_replies(folder, asked, settings, dev, on_batch=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - start
    meta = {
        "teacher": str(folder), "source": str(from_text or prompts), "prompts": len(asked),
        "settings": settings.to_dict(), "device": dev, "seconds": round(seconds, 1),
    }  # fmt: skip
    meta = write_jsonl(rows, out_file, meta)
    summary = {"out": str(out_file), **meta}
    if json_out:
        print_json(summary)
        return
    out.print(f"{len(rows)} replies to {len(asked)} prompts in {seconds:.0f} s -> {out_file}")
    out.print(f"mix them into training with: data.chat={out_file} data.chat_fraction=0.5")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: str = typer.Argument(..., help="Elastic checkpoint folder (or shipped name)."),
    shapes: str | None = typer.Option(None, "--shapes", help="Grid (default: the recipe's grid)."),
    json_out: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Measure (or re-measure) an elastic checkpoint's accuracy table and store it in the checkpoint."""
    from edgekit.elastic.checkpoint import load_elastic_checkpoint, set_accuracy
    from edgekit.elastic.recipe import load_recipe

    elastic, ckpt = load_elastic_checkpoint(checkpoint)
    r = load_recipe(str(ckpt.path / "recipe.yaml"))
    grid = ckpt.plan.grid(shapes or (",".join(r.train.grid) if r.train.grid else None))
    accuracy = _accuracy(elastic, ckpt.plan, grid, r)
    set_accuracy(ckpt, accuracy)
    if json_out:
        print_json(accuracy)
        return
    _print_accuracy(accuracy)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """Elastic checkpoints available: shipped with edgekit and made by the user (under EDGEKIT_HOME/elastic)."""
    from edgekit.elastic.checkpoint import list_checkpoints
    from edgekit.elastic.plan import shipped_plans
    from edgekit.paths import home

    rows = []
    for path, manifest, kind in list_checkpoints([home() / "elastic", Path.cwd() / "runs"]):
        rows.append(
            {
                "path": str(path),
                "kind": kind,
                "model": (manifest or {}).get("model", {}).get("name"),
                "steps": (manifest or {}).get("training", {}).get("steps"),
                "has_accuracy": bool(manifest) and "accuracy.json" in (manifest or {}).get("files", {}),
                "ok": manifest is not None,
            }
        )
    if json_out:
        print_json({"checkpoints": rows, "plans": shipped_plans()})
        return
    table = Table(title="elastic checkpoints")
    for col in ("path", "kind", "model", "steps", "accuracy table"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["path"], row["kind"], row["model"] or "[red]broken[/red]", str(row["steps"] or "-"),
            "yes" if row["has_accuracy"] else "no",
        )  # fmt: skip
    out.print(table)
    out.print(f"[dim]shipped plans (stage 1, no fine-tuning): {', '.join(shipped_plans()) or 'none'}[/dim]")

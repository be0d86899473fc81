"""`edgekit elastic train` and `edgekit elastic evaluate`: over edgekit.elastic.train and edgekit.elastic.accuracy."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import TextColumn
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json


def train_cmd(
    out_dir: o.OutRequired,
    recipe: Annotated[
        str, typer.Option("--recipe", help="Recipe: a YAML file, or a shipped one's name.")
    ] = "smollm2-135m",
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Recipe overrides, e.g. train.steps=200 smol.rank=8.")
    ] = None,
    data_dir: o.DataDir = None,
    resume: o.Resume = False,
    evaluate: o.Evaluate = True,
    half: o.Half = False,
    json_out: o.Json = False,
) -> None:
    """One-for-all SMOL fine-tuning of a plan: checkpoints and metrics.csv in the run folder (--out), and the
    elastic checkpoint in OUT/elastic."""
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.train import TRAINING_DATA, finish, leave_distributed, prepare_run, train
    from edgekit.progress import bar

    r = load_recipe(recipe, overrides or [], data_dir)
    r.check_files(None if evaluate else TRAINING_DATA)  # every file it will read, before hours of training
    for note in shipped_data_notes(recipe, r):
        err.print(f"[yellow]note[/yellow]: {note}")
    with err.status("loading plan, weights and data…"):
        trainer = prepare_run(r, out_dir, resume)
    start_step = trainer.state.step
    progress = bar(TextColumn("{task.fields[losses]}"))
    with progress:
        task = progress.add_task("training", total=r.train.steps, completed=start_step, losses="")

        def on_step(result: Any) -> None:
            shown = " ".join(f"{k}:{v:.2f}" for k, v in result.losses.items())
            progress.update(task, advance=1, losses=shown)
            if not err.is_terminal and (result.step + 1) % r.train.log_every == 0:
                err.print(f"step {result.step + 1}/{r.train.steps} {shown} ({result.seconds:.1f} s/step)")

        state = train(trainer, on_step=on_step, on_stage=lambda s: progress.update(task, description=s))
    leave_distributed()
    if trainer.rank != 0:  # under torchrun / accelerate launch, rank 0 writes and evaluates the result
        return
    with err.status("measuring the accuracy table…") as status:
        result = finish(trainer, start_step, evaluate, half, lambda name: status.update(f"measuring {name}…"))
    if json_out:
        predictor = result.predictor.to_dict() if result.predictor else None
        print_json({"checkpoint": str(result.checkpoint), "training": result.training, "accuracy": result.accuracy,
                    "predictor": predictor, "notes": result.notes})  # fmt: skip
        return
    out.print(f"trained {state.step} steps ({state.tokens:,} tokens) in {state.seconds / 60:.1f} min on "
              f"{trainer.device}; elastic checkpoint: {result.checkpoint}")  # fmt: skip
    if result.accuracy:
        print_accuracy(result.accuracy)
    if result.predictor:
        out.print(f"accuracy: {result.predictor.describe()}")
    for note in result.notes:
        out.print(f"[yellow]{note}[/yellow]")


def shipped_data_notes(recipe_ref: str, recipe: Any) -> list[str]:
    """A shipped recipe run on files other than those its shipped checkpoint was trained on: say so."""
    from edgekit.elastic.checkpoint import data_notes, list_checkpoints, load_checkpoint
    from edgekit.elastic.recipe import DATA_KEYS
    from edgekit.elastic.train import data_files

    for entry in list_checkpoints([]):
        if entry.path.name == recipe_ref and entry.manifest is not None:
            return data_notes(load_checkpoint(entry.path), data_files(recipe, tuple(f"{a}.{b}" for a, b in DATA_KEYS)))
    return []


def evaluate_cmd(
    checkpoint: Annotated[
        str, typer.Argument(help="Elastic checkpoint: a folder from `edgekit elastic train`, or a shipped one's name.")
    ],
    shapes: o.Shapes = None,
    data_dir: o.DataDir = None,
    json_out: o.Json = False,
) -> None:
    """Measure (or re-measure) an elastic checkpoint's accuracy table, on the evaluation data of the recipe it
    was trained with, and store it in the checkpoint."""
    from edgekit.elastic.accuracy import evaluate_shapes
    from edgekit.elastic.checkpoint import data_notes, set_accuracy
    from edgekit.elastic.recipe import DATA_KEYS, load_recipe
    from edgekit.elastic.source import Source
    from edgekit.elastic.train import data_files

    source = Source.resolve(elastic=checkpoint)
    ckpt = source.checkpoint
    r = load_recipe(str(ckpt.path / "recipe.yaml"), data_dir=data_dir)
    r.check_files(tuple(f"eval.{b}" for a, b in DATA_KEYS if a == "eval"))
    for note in data_notes(ckpt, data_files(r, tuple(f"eval.{b}" for a, b in DATA_KEYS if a == "eval"))):
        err.print(f"[yellow]note[/yellow]: {note}")
    if shapes or (r.train.grid and r.train.grid != ["space"]):
        grid = ckpt.plan.grid(shapes or ",".join(r.train.grid or []))
    else:  # the table's own shapes (a space is measured on a few along its frontier), else the plan's grid
        table = (ckpt.accuracy or {}).get("shapes") or {}
        grid = [ckpt.plan.shape(name) for name in table] or ckpt.plan.grid()
    with err.status("measuring the accuracy table…") as status:
        accuracy = evaluate_shapes(source.load(), source.tokenizer(), ckpt.plan, grid, r.eval_settings(),
                                   lambda name: status.update(f"measuring {name}…"))  # fmt: skip
    set_accuracy(ckpt, accuracy)
    if json_out:
        print_json(accuracy)
        return
    print_accuracy(accuracy)


def print_accuracy(accuracy: dict[str, Any]) -> None:
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

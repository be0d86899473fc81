"""`edgekit elastic trim`: over edgekit.elastic.trim."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import TextColumn

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json


def dropped_name(drop: Any) -> str:
    return f"layer {drop.layer}" if drop.block == "layer" else f"layer {drop.layer}'s {drop.block}"


def trim_cmd(
    out_dir: o.OutRequired,
    recipe: Annotated[
        str, typer.Option("--recipe", help="Recipe: a YAML file, or a shipped one's name.")
    ] = "smollm2-135m-pydoc",
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe overrides, e.g. trim.depth=20 trim.interval=10 data.train=my-docs.txt."),
    ] = None,
    data_dir: o.DataDir = None,
    resume: o.Resume = False,
    evaluate: o.Evaluate = True,
    half: o.Half = False,
    json_out: o.Json = False,
) -> None:
    """TrimLLM: fine-tune on a domain while dropping one layer per interval (the one whose removal hurts the
    domain's calibration perplexity least; with trim.granularity=module, two attention or MLP blocks) down to
    trim.depth. Checkpoints and metrics.csv in the run folder
    (--out); the domain checkpoint, every depth reached a shape dN, in OUT/elastic."""
    from edgekit.elastic.recipe import load_recipe
    from edgekit.elastic.train import TRAINING_DATA, leave_distributed, train
    from edgekit.elastic.trim import finish_trim, prepare_trim
    from edgekit.errors import UsageError
    from edgekit.progress import bar

    r = load_recipe(recipe, overrides or [], data_dir)
    if not r.trim.depth:
        raise UsageError(f"recipe {recipe} has no trim.depth: it is not a trim recipe (give trim.depth=N)")
    r.check_files(None if evaluate else TRAINING_DATA)
    with err.status("loading plan, weights and domain data; scoring the start…"):
        trimmer = prepare_trim(r, out_dir, resume)
    start_step = trimmer.state.step

    def depth_line() -> str:
        last = trimmer.drops[-1] if trimmer.drops else None
        dropped = f", last drop {dropped_name(last)} (ppl {last.score:.2f})" if last else ""
        return f"depth {min(trimmer.model.layer_sets)}{dropped}"

    progress = bar(TextColumn("{task.fields[depth]}"), TextColumn("{task.fields[losses]}"))
    with progress:
        task = progress.add_task("trimming", total=r.train.steps, completed=start_step, depth=depth_line(),
                                 losses="")  # fmt: skip

        def on_step(result: Any) -> None:
            shown = " ".join(f"{k.split('-')[0]}:{v:.2f}" for k, v in result.losses.items())
            progress.update(task, advance=1, losses=shown, depth=depth_line())
            if not err.is_terminal and (result.step + 1) % r.train.log_every == 0:
                line = f"step {result.step + 1}/{r.train.steps} {depth_line()} {shown}"
                err.print(f"{line} ({result.seconds:.1f} s/step)")

        state = train(trimmer, on_step=on_step)
    leave_distributed()
    if trimmer.rank != 0:
        return
    with err.status("measuring every depth reached…") as status:
        result = finish_trim(trimmer, start_step, evaluate, half, lambda name: status.update(f"measuring {name}…"))
    drops = [d.to_dict() for d in trimmer.drops]
    if json_out:
        print_json({"checkpoint": str(result.checkpoint), "training": result.training, "drops": drops,
                    "accuracy": result.accuracy})  # fmt: skip
        return
    from edgekit.cli.elastic.train import print_accuracy

    out.print(f"trimmed to depth {min(trimmer.model.layer_sets)} in {state.step} steps ({state.tokens:,} tokens, "
              f"{state.seconds / 60:.1f} min on {trimmer.device}); domain checkpoint: {result.checkpoint}")  # fmt: skip
    out.print("drop order: " + " ".join(f"{d.layer}" if d.block == "layer" else f"{d.layer}.{d.block}"
                                        for d in trimmer.drops))  # fmt: skip
    if result.accuracy:
        print_accuracy(result.accuracy)

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError, first_line
from edgekit.models.registry import DEFAULT_MODEL


def eval_cmd(
    model: str | None = typer.Option(
        None, "--model", "-m", help=f"Cache name, local HF folder or hub id [default: {DEFAULT_MODEL}]."
    ),
    plan: str | None = typer.Option(None, "--plan", help="Evaluate a shape of this plan (folder or shipped name)."),
    shape: str | None = typer.Option(None, "--shape", help="The plan's shape to evaluate, e.g. d20-w75."),
    text: Path | None = typer.Option(None, "--text", help="Plain-text file: sliding-window perplexity."),
    mc: Path | None = typer.Option(None, "--mc", help="Multiple-choice JSONL (PIQA or context/choices/label)."),
    labels: Path | None = typer.Option(None, "--labels", help="PIQA labels file (default: <stem>-labels.lst)."),
    max_length: int = typer.Option(512, "--max-length", min=2, help="Perplexity window, in tokens."),
    stride: int = typer.Option(256, "--stride", min=1, help="How far each perplexity window moves, in tokens."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=2, help="Score only the text's first N tokens."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N multiple-choice items."),
    lm_eval_tasks: str | None = typer.Option(
        None, "--lm-eval", help="Also run these lm-evaluation-harness tasks (comma-separated); needs lm_eval."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Measure a model: perplexity on a text and/or zero-shot multiple-choice accuracy."""
    from edgekit.evaluation.metrics import load_piqa, multiple_choice, perplexity, read_text
    from edgekit.models.reference import load

    if text is None and mc is None and not lm_eval_tasks:
        raise UsageError(
            "nothing to evaluate: give --text FILE (perplexity), --mc FILE (multiple choice) and/or --lm-eval TASKS"
        )
    if shape is not None and plan is None:
        raise UsageError("--shape needs --plan (the plan says which layers and channels a shape keeps)")
    if lm_eval_tasks:
        require_lm_eval()
    # Read the data before loading the model, so a bad file fails in milliseconds, not after the load.
    corpus = read_text(text) if text is not None else None
    items = load_piqa(mc, labels=labels, limit=limit) if mc is not None else None

    if plan is not None:
        mdl, tokenizer, name, source = load_plan_shape(plan, shape or "full", model)
    else:
        with err.status(f"loading {model or DEFAULT_MODEL}…"):
            mdl, tokenizer, ref = load(model or DEFAULT_MODEL)
        name, source = ref.name, ref.source
    results: dict[str, Any] = {"model": name, "source": source}
    if corpus is not None:
        ppl = perplexity(mdl, tokenizer, corpus, max_length=max_length, stride=stride, max_tokens=max_tokens)
        results["perplexity"] = {"data": str(text), **ppl.to_dict()}
    if items is not None:
        results["multiple_choice"] = {"data": str(mc), **multiple_choice(mdl, tokenizer, items).to_dict()}

    if lm_eval_tasks:
        results["lm_eval"] = run_lm_eval(mdl, tokenizer, [t.strip() for t in lm_eval_tasks.split(",") if t.strip()])
    if json_out:
        print_json(results)
        return
    table = Table(title=name)
    for col in ("task", "metric", "value", "tokens/items", "seconds"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    notes = []
    if "perplexity" in results:
        p = results["perplexity"]
        name = f"perplexity {Path(p['data']).name}"
        table.add_row(name, "ppl", f"{p['ppl']:.3f}", f"{p['tokens_scored']:,}", f"{p['seconds']:.1f}")
        notes.append(
            f"{name}: windows of max_length {p['max_length']} moving by stride {p['stride']} "
            f"({p['windows']} windows over {p['tokens']:,} tokens)"
        )
    if "multiple_choice" in results:
        m = results["multiple_choice"]
        name = f"0-shot {Path(m['data']).name}"
        table.add_row(name, "acc", f"{m['acc']:.4f} ± {m['stderr']:.4f}", f"{m['n']:,}", f"{m['seconds']:.1f}")
        table.add_row(name, "acc_norm", f"{m['acc_norm']:.4f} ± {m['acc_norm_stderr']:.4f}", "", "")
        notes.append(f"{name}: summed log-likelihood of each choice (acc), per UTF-8 byte of the choice (acc_norm)")
    for task, metrics in results.get("lm_eval", {}).items():
        for metric, value in metrics.items():
            if isinstance(value, float) and "stderr" not in metric:
                table.add_row(f"lm-eval {task}", metric, f"{value:.4f}", "", "")
    out.print(table)
    for note in notes:
        out.print(f"[dim]{note}[/dim]")


def load_plan_shape(plan_ref: str, shape_text: str, model: str | None) -> tuple[Any, Any, str, str]:
    """A plan's shape behind a transformers-like interface, and the base model's tokenizer."""
    from transformers import AutoTokenizer

    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.elastic.plan import load_plan

    plan = load_plan(plan_ref)
    shape = plan.shape(shape_text)
    with err.status(f"loading {plan.model.name} as plan {plan.name}…"):
        elastic = load_elastic(plan, model)
        tokenizer = AutoTokenizer.from_pretrained(base_folder(plan, model))
    return elastic.at(shape), tokenizer, f"{plan.name}:{shape}", str(plan.path)


def require_lm_eval() -> None:
    from importlib.util import find_spec

    from edgekit.errors import MissingDependencyError

    if find_spec("lm_eval") is None:
        raise MissingDependencyError(
            "--lm-eval needs lm-evaluation-harness: pip install lm-eval (its tasks download datasets from the hub)"
        )


def run_lm_eval(model: Any, tokenizer: Any, tasks: list[str]) -> dict[str, Any]:
    """lm-evaluation-harness on the loaded model (a transformers model, or a plan shape behind the same calls)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise UsageError("--lm-eval runs on Hugging Face checkpoints: cut the shape with `edgekit elastic extract`")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    try:
        out = simple_evaluate(model=lm, tasks=tasks)
    except Exception as exc:  # unknown task, dataset unreachable: lm_eval raises many kinds
        raise UsageError(f"lm-eval failed on {', '.join(tasks)}: {first_line(exc)}") from None
    return {task: dict(metrics) for task, metrics in out["results"].items()}

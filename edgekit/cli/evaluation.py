"""`edgekit eval`: over edgekit.evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError


def eval_cmd(
    model: o.Model = None,
    plan: o.Plan = None,
    elastic: o.Elastic = None,
    shape: o.Shape = None,
    base_model: o.BaseModel = None,
    text: o.Text = None,
    mc: o.MultipleChoice = None,
    labels: o.Labels = None,
    max_length: o.MaxLength = 512,
    stride: o.Stride = 256,
    text_tokens: o.TextTokens = None,
    limit: o.Limit = None,
    lm_eval_tasks: Annotated[
        str | None,
        typer.Option("--lm-eval", help="Also run these lm-evaluation-harness tasks (comma-separated); needs lm_eval."),
    ] = None,
    json_out: o.Json = False,
) -> None:
    """Measure a model (--model, default: the default model), or one shape of a plan or an elastic checkpoint
    without extracting it (--plan/--elastic, --shape, default full): perplexity on a text and/or zero-shot
    multiple-choice accuracy."""
    from edgekit.evaluation.data import load_piqa, read_text
    from edgekit.evaluation.lm_eval import require_lm_eval, run_lm_eval
    from edgekit.evaluation.multiple_choice import multiple_choice
    from edgekit.evaluation.perplexity import perplexity

    if text is None and mc is None and not lm_eval_tasks:
        raise UsageError(
            "nothing to evaluate: give --text FILE (perplexity), --mc FILE (multiple choice) and/or --lm-eval TASKS"
        )
    shaped = plan is not None or elastic is not None
    if shape is not None and not shaped:
        raise UsageError("--shape needs --plan or --elastic (they say which layers and channels a shape keeps)")
    if shaped and model is not None:
        raise UsageError("give --model, or --plan/--elastic with --shape, not both")
    if lm_eval_tasks:
        require_lm_eval()
    # Read the data before loading the model, so a bad file fails in milliseconds, not after the load.
    corpus = read_text(text) if text is not None else None
    items = load_piqa(mc, labels=labels, limit=limit) if mc is not None else None
    mdl, tokenizer, name, where = load_for_eval(model, plan, elastic, shape, base_model)
    results: dict[str, Any] = {"model": name, "source": where}
    if corpus is not None:
        ppl = perplexity(mdl, tokenizer, corpus, max_length=max_length, stride=stride, max_tokens=text_tokens)
        results["perplexity"] = {"data": str(text), **ppl.to_dict()}
    if items is not None:
        results["multiple_choice"] = {"data": str(mc), **multiple_choice(mdl, tokenizer, items).to_dict()}
    if lm_eval_tasks:
        results["lm_eval"] = run_lm_eval(mdl, tokenizer, [t.strip() for t in lm_eval_tasks.split(",") if t.strip()])
    if json_out:
        print_json(results)
        return
    render(results)


def load_for_eval(
    model: str | None, plan: str | None, elastic: str | None, shape: str | None, base_model: str | None
) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, name, where it came from): a model as it is, or a shape of a plan or checkpoint."""
    from edgekit.models.reference import load
    from edgekit.models.registry import DEFAULT_MODEL

    if plan is None and elastic is None:
        with err.status(f"loading {model or DEFAULT_MODEL}…"):
            mdl, tokenizer, ref = load(model or DEFAULT_MODEL)
        return mdl, tokenizer, ref.name, ref.source
    from edgekit.elastic.source import Source

    source = Source.resolve(elastic, plan, base_model=base_model)
    the_shape = source.shape(shape or "full")
    with err.status(f"loading {source.label}…"):
        mdl, tokenizer = source.load().at(the_shape), source.tokenizer()
    return mdl, tokenizer, f"{source.name}:{the_shape}", str(source.plan.path)


def render(results: dict[str, Any]) -> None:
    table = Table(title=results["model"])
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

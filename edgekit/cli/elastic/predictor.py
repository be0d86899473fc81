"""`edgekit elastic predictor`: over edgekit.elastic.predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.elastic.predictor import CHAT_PROMPTS, DEV_TOKENS, HELD_OUT, WINDOW
from edgekit.errors import UsageError

PredictorTokens = Annotated[
    int, typer.Option("--tokens", min=16, help="Dev-text tokens each design shape is scored on.")
]
HeldOut = Annotated[
    int, typer.Option("--held-out", min=0, help="Shapes evaluated only to measure the predictor's error.")
]


def predictor_cmd(
    elastic: o.Elastic = None,
    plan: o.Plan = None,
    text: o.DevText = None,
    tokens: PredictorTokens = DEV_TOKENS,
    window: Annotated[int, typer.Option("--window", min=8, help="Perplexity window, in tokens.")] = WINDOW,
    held_out: HeldOut = HELD_OUT,
    chat: o.ChatPrompts = None,
    chat_prompts: Annotated[
        int, typer.Option("--chat-prompts", min=1, help="Dev prompts whose reference replies it scores.")
    ] = CHAT_PROMPTS,
    json_out: o.Json = False,
) -> None:
    """Fit the accuracy predictor of a plan (stage-1 weights) or an elastic checkpoint (with its SMOL) on
    --dev-text, or its chat predictor (chat_ppl) on --chat prompts, and store it beside them; without either,
    show the stored ones. Deploy ranks the whole space by them."""
    from edgekit.elastic.predictor import FILES, fit_chat_source, fit_source
    from edgekit.elastic.source import Source
    from edgekit.progress import bar

    if text is not None and chat is not None:
        raise UsageError("fit one predictor at a time: --dev-text (ppl) or --chat (chat_ppl)")
    source = Source.resolve(elastic, plan)
    if text is None and chat is None:
        text_p, chat_p = (source.predictor(m) for m in FILES)
        if text_p is None and chat_p is None:
            raise UsageError(f"{source.label} has no accuracy predictor: fit one with --dev-text FILE or --chat FILE")
        if json_out:  # the text predictor's fields at the top, the chat predictor's under its own key
            data = text_p.to_dict() if text_p else {}
            print_json({**data, "source": source.label, **({"chat_predictor": chat_p.to_dict()} if chat_p else {})})
            return
        for found in (text_p, chat_p):
            if found is not None:
                print_predictor(found, source.name)
        return
    if chat is not None:
        from edgekit.cli.console import err
        from edgekit.evaluation.chat import reference_for

        with err.status("the full model's reference replies…"):
            ref = reference_for(source.base_folder(), source.plan.model.digest, chat, chat_prompts, 96)
        with bar() as progress:
            fitted = fit_chat_source(source, ref, held_out, shape_progress(progress, source.plan, held_out))
        source.save_chat_reference(ref)
    else:
        with bar() as progress:
            on_shape = shape_progress(progress, source.plan, held_out)
            fitted = fit_source(source, text, tokens, window, held_out, on_shape)
    path = source.save_predictor(fitted)
    show(fitted, source, path, json_out)


def shape_progress(progress: Any, plan: Any, held_out: int) -> Any:
    """An on_shape callback that shows which design shape is being evaluated, and how many are done."""
    from edgekit.elastic.predictor import design

    total = len(design(plan)) + held_out
    task = progress.add_task("accuracy predictor", total=total)
    done = [0]

    def on_shape(name: str) -> None:
        progress.update(task, description=f"accuracy predictor: {name}", completed=done[0])
        done[0] += 1

    return on_shape


def show(predictor: Any, source: Any, path: Path | None, json_out: bool) -> None:
    if json_out:
        print_json({**predictor.to_dict(), "source": source.label, **({"path": str(path)} if path else {})})
        return
    print_predictor(predictor, source.name)
    if path is not None:
        out.print(f"written to {path}")


def print_predictor(predictor: Any, name: str) -> None:
    """The fit's coefficients and its error on the shapes left out, as the LUT reports its own."""
    d = predictor.data
    if predictor.metric == "chat_ppl":
        on = f"{d['file']} ({d.get('prompts')} dev prompts, {d['tokens']} tokens of the full model's replies)"
    else:
        on = f"{d['file']} ({d['tokens']} tokens after {d['skip_tokens']}, windows of {d['window']})"
    out.print(f"accuracy predictor of {name}: log {predictor.metric} from {len(predictor.fitted_on)} shapes on {on}")
    coef = "  ".join(f"{t} {c:+.3g}" for t, c in zip(predictor.terms, predictor.coefficients, strict=True))
    out.print(f"[dim]{coef}[/dim]", highlight=False)
    v = predictor.validation
    if not v:
        out.print("no shapes were left out of the fit: its error is unmeasured")
        return
    useful = v.get("useful") or {}
    table = Table(title=f"on {v['n']} shapes left out of a fit on {v['fitted_on']}")
    for col in ("shape", f"measured {predictor.metric}", "predicted", "error"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for name, row in v["per_shape"].items():
        err = (row["predicted"] - row["ppl"]) / row["ppl"] * 100
        table.add_row(name, f"{row['ppl']:.4g}", f"{row['predicted']:.4g}", f"{err:+.1f} %")
    out.print(table)
    for label, stats in (("all", v), (f"within x{useful.get('within', 0):.0f} of the full model", useful)):
        if stats.get("n"):
            out.print(
                f"{label} ({stats['n']}): median error {stats['median_pct']:.1f} %, max {stats['max_pct']:.1f} %, "
                f"{stats['within_10_pct']:.0f} % within ±10 %, rank correlation {stats['spearman']:.3f}"
            )
    out.print(f"then refitted on all {len(predictor.fitted_on)} shapes")

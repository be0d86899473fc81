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
    deployment: o.Deployment = None,
    chat: o.ChatPrompts = None,
    chat_limit: Annotated[int, typer.Option("--chat-limit", min=1, help="Dev prompts the chat metrics use.")] = 64,
    chat_tokens: Annotated[
        int, typer.Option("--chat-tokens", min=8, help="Longest reply, in tokens, the chat metrics generate.")
    ] = 96,
    lm_eval_tasks: Annotated[
        str | None,
        typer.Option("--lm-eval", help="Also run these lm-evaluation-harness tasks (comma-separated); needs lm_eval."),
    ] = None,
    json_out: o.Json = False,
) -> None:
    """Measure a model (--model, default: the default model), one shape of a plan or an elastic checkpoint
    without extracting it (--plan/--elastic, --shape, default full), or a deployment through its own runtime
    and precision (--deployment: the artifact a user runs): perplexity on a text, zero-shot multiple-choice
    accuracy, and the chat metrics (--chat)."""
    from edgekit.evaluation.data import load_piqa, read_text
    from edgekit.evaluation.lm_eval import require_lm_eval, run_lm_eval
    from edgekit.evaluation.multiple_choice import multiple_choice
    from edgekit.evaluation.perplexity import perplexity

    if text is None and mc is None and chat is None and not lm_eval_tasks:
        raise UsageError(
            "nothing to evaluate: give --text FILE (perplexity), --mc FILE (multiple choice), --chat PROMPTS "
            "and/or --lm-eval TASKS"
        )
    if chat is not None and not chat.is_file():  # before any model is loaded
        raise UsageError(f"chat prompts not found: {chat}")
    if deployment is not None:
        if model is not None or plan is not None or elastic is not None:
            raise UsageError("give --deployment alone, or --model, or --plan/--elastic with --shape")
        if lm_eval_tasks:
            raise UsageError("--lm-eval runs on transformers models, not on a deployment's runtime")
        results = eval_deployment(deployment, text, mc, labels, limit, max_length, stride, text_tokens, chat,
                                  chat_limit, chat_tokens)  # fmt: skip
        if json_out:
            print_json(results)
            return
        render(results)
        return
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
    if chat is not None:
        results["chat"] = chat_of_model(mdl, tokenizer, model, plan, elastic, base_model, chat, chat_limit,
                                        chat_tokens)  # fmt: skip
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


def eval_deployment(
    folder: Path,
    text: Path | None,
    mc: Path | None,
    labels: Path | None,
    limit: int | None,
    max_length: int,
    stride: int,
    text_tokens: int | None,
    chat: Path | None,
    chat_limit: int,
    chat_tokens: int,
) -> dict[str, Any]:
    """A deployment's figures through its own runtime: the int4 ONNX model ORT GenAI runs, not the weights it
    was built from."""
    from edgekit.deployment.manifest import open_deployment
    from edgekit.evaluation.data import load_piqa, read_text
    from edgekit.evaluation.model_io import SessionModel
    from edgekit.evaluation.multiple_choice import multiple_choice
    from edgekit.evaluation.perplexity import perplexity

    corpus = read_text(text) if text is not None else None
    items = load_piqa(mc, labels=labels, limit=limit) if mc is not None else None
    with err.status(f"opening {folder}…"):
        manifest, session, tokenizer = open_deployment(folder)
    rt = manifest.runtime
    results: dict[str, Any] = {
        "model": f"{manifest.model['name']}:{manifest.shape.name}",
        "source": f"deployment {folder} ({rt.name} {rt.precision} on {rt.device})",
        "runtime": {"name": rt.name, "precision": rt.precision, "device": rt.device},
    }
    lm = SessionModel(session) if corpus is not None or items is not None else None
    if corpus is not None:
        ppl = perplexity(lm, tokenizer, corpus, max_length=max_length, stride=stride, max_tokens=text_tokens)
        results["perplexity"] = {"data": str(text), **ppl.to_dict()}
    if items is not None:
        results["multiple_choice"] = {"data": str(mc), **multiple_choice(lm, tokenizer, items).to_dict()}
    if chat is not None:
        from edgekit.evaluation.chat import chat_scores, describe, reference_for
        from edgekit.models.reference import local_folder, resolve

        base = local_folder(resolve(manifest.model["ref"]))
        with err.status("the full model's reference replies…"):
            ref = reference_for(base, manifest.model["digest"], chat, chat_limit, chat_tokens)
        logits = session.sequence_logits if hasattr(session, "sequence_logits") else None
        with err.status(f"chat metrics on {len(ref.prompts)} prompts…"):
            results["chat"] = {"data": describe(ref), **chat_scores(session, tokenizer, ref, logits)}
    return results


def chat_of_model(
    mdl: Any, tokenizer: Any, model: str | None, plan: str | None, elastic: str | None, base_model: str | None,
    prompts: Path, limit: int, tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """The chat metrics of a model as it is or of one shape, against its base model's reference replies."""
    from edgekit.evaluation.chat import chat_scores, describe, reference_for

    if plan is None and elastic is None:
        from edgekit.engines.torch_engine import TorchSession
        from edgekit.models.reference import local_folder, resolve
        from edgekit.models.registry import DEFAULT_MODEL
        from edgekit.models.weights import weights_digest

        folder = local_folder(resolve(model or DEFAULT_MODEL))
        with err.status("the full model's reference replies…"):
            ref = reference_for(folder, weights_digest(folder), prompts, limit, tokens)
        session = TorchSession(mdl)
        return {"data": describe(ref), **chat_scores(session, tokenizer, ref, session.sequence_logits)}
    from edgekit.elastic.accuracy import chat_reference, shape_chat_scores
    from edgekit.elastic.source import Source
    from edgekit.evaluation.settings import EvalSettings

    plan_of = Source.resolve(elastic, plan, base_model=base_model).plan  # mdl is its shape, weights loaded
    settings = EvalSettings(chat_prompts=str(prompts), chat_limit=limit, chat_tokens=tokens)
    with err.status("the full model's reference replies…"):
        ref = chat_reference(plan_of, settings)
    scores = shape_chat_scores(mdl.elastic, plan_of, tokenizer, mdl.shape, ref)
    return {"data": describe(ref), **scores}


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
    if "chat" in results:
        c = results["chat"]
        for metric in ("chat_ppl", "answer_rate", "agreement"):
            value = c.get(metric)
            table.add_row("chat", metric, "n/a" if value is None else f"{value:.3f}", "", "")
        notes.append(f"chat: {c['data']}")
    out.print(table)
    for note in notes:
        out.print(f"[dim]{note}[/dim]")

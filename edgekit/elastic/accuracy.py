"""The accuracy table of an elastic model: per shape, dev perplexities and zero-shot accuracy.

`deploy` ranks shapes by it. Perplexity on the calibration text skips the tokens the plan was
calibrated on, so the figure is held out from selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.artifacts import utc_now
from edgekit.elastic.plan import Plan
from edgekit.evaluation.chat import describe as describe_chat
from edgekit.evaluation.settings import EvalData, EvalSettings, score
from edgekit.formats import tag
from edgekit.shapes import Shape

FORMAT = tag("edgekit-accuracy")


def evaluate_shapes(
    elastic: Any,
    tokenizer: Any,
    plan: Plan,
    shapes: list[Shape],
    settings: EvalSettings,
    on_shape: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The table for `shapes`: each shape's parameters and figures, and what data they were measured on."""
    for shape in shapes:
        plan.check_shape(shape)
    data = EvalData.load(settings, plan)
    chat = chat_reference(plan, settings)
    rows: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        if on_shape:
            on_shape(shape.name)
        rows[shape.name] = {"params": plan.geometry.non_embedding_params(shape),
                            **score(elastic.eval().at(shape), tokenizer, data)}  # fmt: skip
        if chat is not None:
            start = time.perf_counter()
            rows[shape.name].update(shape_chat_scores(elastic, plan, tokenizer, shape, chat))
            rows[shape.name]["seconds"] = round(rows[shape.name]["seconds"] + time.perf_counter() - start, 1)
    described = data.describe()
    if chat is not None:
        described["chat"] = describe_chat(chat)
    return {"format": FORMAT, "shapes": rows, "data": described, "created": utc_now()}


def chat_reference(plan: Plan, settings: EvalSettings) -> Any:
    """The base model's reference replies on the settings' chat prompts (made once, cached), or None."""
    if not settings.chat_prompts:
        return None
    from edgekit.elastic.base_model import base_folder
    from edgekit.evaluation.chat import reference_for

    return reference_for(base_folder(plan), plan.model.digest, Path(settings.chat_prompts), settings.chat_limit,
                         settings.chat_tokens)  # fmt: skip


def shape_chat_scores(elastic: Any, plan: Plan, tokenizer: Any, shape: Shape, ref: Any) -> dict[str, Any]:
    """One shape's chat metrics: chat_ppl from the elastic model's logits, answer rate and agreement from its
    greedy replies (a transformers model built from the shape's slices, decoding with a KV cache)."""
    from edgekit.elastic.base_model import base_folder
    from edgekit.engines.torch_engine import ElasticTorchSession
    from edgekit.evaluation.chat import chat_scores
    from edgekit.evaluation.model_io import sequence_logits
    from edgekit.models.weights import read_config

    session = ElasticTorchSession(elastic, plan, read_config(base_folder(plan)), shape)
    return chat_scores(session, tokenizer, ref, sequence_logits(elastic.eval().at(shape)))


def table_shapes(plan: Plan, predictor: Any, trained: list[Shape], n: int) -> list[Shape]:
    """`n` shapes spread by parameter count along the predicted frontier of `trained` (each predicted better
    than every smaller one), the full model among them: where deploy chooses."""
    g = plan.geometry
    front: list[Shape] = []
    for s in sorted(trained, key=lambda s: (g.non_embedding_params(s), predictor.predict(plan, s))):
        if not front or predictor.predict(plan, s) < predictor.predict(plan, front[-1]):
            front.append(s)
    picks = {front[round(i * (len(front) - 1) / (n - 1))] for i in range(n)} if len(front) > 1 else set(front)
    return sorted(picks | {plan.full}, key=g.non_embedding_params, reverse=True)

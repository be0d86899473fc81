"""Flextron's input-adaptive router, per prompt: each reply is served by the menu shape the router expects to
handle its prompt best for the latency it costs, under a mean-latency budget.

What we took from Flextron: a router that looks at the input and spends less on easy inputs, trained from
data the model itself makes, and a latency target turned into a choice. What we changed: Flextron routes each
token inside the network (per layer, with a surrogate model of quality); we route each *prompt* to a whole
shape, because a reply made by one shape keeps its KV cache consistent and every runtime we compile for
(ONNX Runtime GenAI, TVM, llama.cpp, MLC) runs a standard subnet, not a per-token mixture. The router is a
ridge regression per menu shape on cheap features of the prompt (the hidden state after the first layers every
menu shape shares, and its length), predicting the shape's loss on the full model's reply; one exchange rate
between predicted loss and latency is calibrated on held-apart prompts so the mean latency lands on a budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.shapes import Shape


def identity(source: Any) -> dict[str, Any]:
    """What a router belongs to: the checkpoint (or plan) whose shapes it scored."""
    return {"checkpoint": source.name, "smol_sha256": source.smol_sha256,
            "plan": source.plan.permutations_sha256}  # fmt: skip


def default_dir(source: Any) -> Path:
    from edgekit.paths import home

    return home() / "routers" / source.name


def fit_router(
    source: Any,
    prompts: Path,
    menu: list[Shape],
    limit: int | None = None,
    on_step: Callable[[str], None] | None = None,
    reply_tokens: int | None = None,
) -> tuple[Any, Any, Any]:
    """(router, feature extractor, routing data) for `menu` of `source`, on the router part of `prompts`' dev
    prompts (at most `limit`)."""
    from edgekit.models.weights import read_config
    from edgekit.routing import data, router
    from edgekit.routing.features import FeatureExtractor

    say = on_step or (lambda _text: None)
    say("the full model's replies to the router's prompts")
    ref = data.reference(source, prompts, "router", limit, reply_tokens=reply_tokens or data.REPLY_TOKENS)
    extractor = FeatureExtractor.from_elastic(source.load(), source.plan, read_config(source.base_folder()), menu)
    routing = data.collect(source, menu, ref, extractor, say)
    fitted = router.fit(routing.features, routing.loss, routing.menu, identity(source))
    fitted.stats["prompts_file"] = {"file": prompts.name, "sha256": ref.record.get("sha256"), "part": "dev, router"}
    fitted.stats["layers"] = extractor.layers
    return fitted, extractor, routing

"""The check every int4 build passes before it ships: the runtime's logits against the same weights in torch."""

from __future__ import annotations

from typing import Any

from edgekit.errors import ExternalToolError

CHECK_TOKENS = 64


def check_against(model: Any, session: Any, ids: list[int], artifact: str, floor: float) -> dict[str, Any]:
    """Greedy agreement and relative logit error of a built `artifact` (its `session.sequence_logits`) against
    the torch model with the same weights dequantized; below `floor` agreement it is refused, never shipped."""
    import torch

    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].float()
    got = session.sequence_logits(ids)
    agree = float((expected.argmax(-1) == got.argmax(-1)).float().mean())
    err = float((expected - got).abs().mean() / expected.abs().mean())
    if agree < floor:
        raise ExternalToolError(
            f"the {artifact} does not compute what its weights say (top-1 agreement {agree:.0%} with torch on "
            f"{len(ids)} tokens): its graph has changed in a way edgekit does not know"
        )
    return {"tokens": len(ids), "top1_agreement": round(agree, 4), "relative_logit_error": round(err, 5),
            "device": session.device}  # fmt: skip

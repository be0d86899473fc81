"""`edgekit elastic plan`: calibrate, rank widths, select depths, and write the plan folder."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit import __version__
from edgekit.artifacts import sha256_file
from edgekit.elastic.plan import Calibration, DepthSection, Permutations, Plan, WidthSection
from edgekit.errors import UsageError
from edgekit.evaluate import read_text
from edgekit.shapes import Geometry

# Why these defaults: see README "Planning budget". A scorer call runs the changed suffix of
# layers and the 49k-vocabulary LM head on every calibration token, about 350 calls for the
# default model; 1024 tokens (8 x 128) keeps the whole plan within minutes on 2 cores, and the
# DP compares candidates on the *same* tokens, so ranking noise is far below the perplexity's own.
DEPTH_TOKENS = 1024
WIDTH_TOKENS = 8192  # one forward pass of the full model: cheap, so the channel statistics get more
SEQ_LEN = 128
PARAM_FRACTIONS = (1.0, 0.8, 0.65, 0.5)


@dataclass
class PlanRequest:
    model: str
    calib: Path
    method: str = "amoeba"
    scorer: str = "ppl"
    width_method: str = "flap"
    depth_tokens: int = DEPTH_TOKENS
    width_tokens: int = WIDTH_TOKENS
    seq_len: int = SEQ_LEN
    min_depth: int | None = None


def calibration_ids(tokenizer: Any, text: str, tokens: int, seq_len: int, where: str) -> torch.Tensor:
    """The first `tokens` tokens of the text as (tokens / seq_len) rows; UsageError if it is too short."""
    rows = math.ceil(tokens / seq_len)
    need = rows * seq_len
    # Tokenize a prefix that is surely long enough (a token is rarely under 2 characters) rather
    # than the whole file; fall back to the whole text when the prefix is short.
    ids: list[int] = []
    for chars in (need * 8, None):
        ids = tokenizer(text[:chars] if chars else text, add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise UsageError(
            f"calibration text {where} has {len(ids):,} tokens; the budget needs {need:,} "
            f"({rows} sequences of {seq_len}): give a longer text or lower --calib-tokens / --width-tokens"
        )
    return torch.tensor(ids[:need]).view(rows, seq_len)


def width_grid(geometry: Geometry) -> list[int]:
    min_w = geometry.min_width()
    widths = {100} | {geometry.width_for_fraction(f, min_w) for f in PARAM_FRACTIONS[1:]}
    return sorted(widths, reverse=True)


def build_plan(
    req: PlanRequest,
    on_stage: Callable[[str], Any] | None = None,
    on_call: Callable[[], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[Plan, Permutations]:
    """Everything `plan` computes, in memory; the caller writes it (atomically)."""
    from transformers import AutoConfig, AutoTokenizer

    from edgekit.elastic.base import identity
    from edgekit.elastic.depth import DEPTH_METHODS, SCORERS, dp_calls, select_depth
    from edgekit.elastic.model import ElasticModel
    from edgekit.elastic.width import WIDTH_METHODS, width_importance
    from edgekit.modelref import check_fits_memory, local_folder, resolve
    from edgekit.weights import Weights

    for value, allowed, what in (
        (req.method, DEPTH_METHODS, "--method"),
        (req.scorer, SCORERS, "--scorer"),
        (req.width_method, WIDTH_METHODS, "--width-method"),
    ):
        if value not in allowed:
            raise UsageError(f"unknown {what} '{value}'; choose from {', '.join(allowed)}")
    stage = on_stage or (lambda _label: None)
    text = read_text(req.calib)
    model_ref = resolve(req.model)
    folder = local_folder(model_ref)
    ident = identity(model_ref, folder)
    check_fits_memory(folder)
    config = AutoConfig.from_pretrained(folder)
    geometry = Geometry.from_config(config)
    n = geometry.num_layers
    min_depth = req.min_depth or math.ceil(n / 2)
    if not 2 <= min_depth <= n:
        raise UsageError(f"--min-depth must be between 2 and {n} (the model has {n} layers)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = calibration_ids(tokenizer, text, max(req.depth_tokens, req.width_tokens), req.seq_len, str(req.calib))
    depth_ids = ids[: math.ceil(req.depth_tokens / req.seq_len)]
    width_ids = ids[: math.ceil(req.width_tokens / req.seq_len)]

    stage("loading weights")
    model = ElasticModel.from_hf_state(config, Weights(folder).state()).eval()

    stage("ranking FFN channels and heads")
    start = time.perf_counter()
    ffn, heads, ffn_scores, head_scores = width_importance(model, width_ids, req.width_method)
    width_seconds = time.perf_counter() - start

    stage("selecting layers")
    protected = {n - 1, 0}
    if on_total is not None:
        on_total(dp_calls(n, min_depth, protected) if req.method == "amoeba" else 0)
    depth = select_depth(model, depth_ids, req.method, req.scorer, min_depth, on_call=on_call)
    plan = Plan(
        model=ident,
        geometry=geometry,
        depth=DepthSection(
            depth.method,
            depth.scorer,
            min_depth,
            sorted(protected),
            depth.layer_sets,
            depth.scores,
            depth.scorer_calls,
            round(depth.seconds, 2),
        ),
        width=WidthSection(
            req.width_method, geometry.min_width(), width_grid(geometry), geometry.ffn_multiple, round(width_seconds, 2)
        ),
        calibration=Calibration(
            req.calib.name, sha256_file(req.calib), req.seq_len, depth_ids.numel(), width_ids.numel()
        ),
        edgekit_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return plan, Permutations(ffn, heads, ffn_scores, head_scores)

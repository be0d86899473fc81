"""`edgekit elastic plan`: calibrate, rank widths, select depths, and write the plan folder."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit import __version__
from edgekit.artifacts import sha256_file, utc_now
from edgekit.elastic.plan import Calibration, DepthSection, Permutations, Plan, WidthSection
from edgekit.errors import UsageError
from edgekit.evaluation.data import read_text
from edgekit.shapes import DEFAULT_FFN_FLOOR, Geometry

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
    ffn_floor: int = DEFAULT_FFN_FLOOR


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
    """The coupled widths of the default grid: the full width and those nearest 80, 65 and 50 % of the
    parameters at full depth."""
    widths = {100} | {geometry.width_for_fraction(f) for f in PARAM_FRACTIONS[1:]}
    return sorted(widths, reverse=True)


@dataclass
class Context:
    """Everything planning reads: the base model (unpermuted), its identity and the calibration tokens."""

    req: PlanRequest
    ident: Any
    config: Any
    geometry: Geometry
    model: Any  # ElasticModel on the unpermuted weights
    depth_ids: torch.Tensor
    width_ids: torch.Tensor
    min_depth: int
    hidden: Any = None  # the full model's hidden states on depth_ids (depth.Calibration), computed once


def check_methods(req: PlanRequest) -> None:
    from edgekit.elastic.depth import DEPTH_METHODS, SCORERS
    from edgekit.elastic.width import WIDTH_METHODS

    for value, allowed, what in (
        (req.method, DEPTH_METHODS, "--method"),
        (req.scorer, SCORERS, "--scorer"),
        (req.width_method, WIDTH_METHODS, "--width-method"),
    ):
        if value not in allowed:
            raise UsageError(f"unknown {what} '{value}'; choose from {', '.join(allowed)}")


def prepare(req: PlanRequest, stage: Callable[[str], Any] = lambda _label: None) -> Context:
    from transformers import AutoConfig, AutoTokenizer

    from edgekit.elastic.base_model import identity
    from edgekit.elastic.model import ElasticModel
    from edgekit.models.reference import check_fits_memory, local_folder, resolve
    from edgekit.models.weights import Weights

    check_methods(req)
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
    stage("loading weights")
    model = ElasticModel.from_hf_state(config, Weights(folder).state()).eval()
    return Context(
        req,
        ident,
        config,
        geometry,
        model,
        ids[: math.ceil(req.depth_tokens / req.seq_len)],
        ids[: math.ceil(req.width_tokens / req.seq_len)],
        min_depth,
    )


def rank_width(ctx: Context, method: str) -> tuple[WidthSection, Permutations]:
    from edgekit.elastic.width import width_importance

    start = time.perf_counter()
    ffn, heads, ffn_scores, head_scores = width_importance(ctx.model, ctx.width_ids, method)
    g = ctx.geometry
    seconds = round(time.perf_counter() - start, 2)
    section = WidthSection(method, ctx.req.ffn_floor, width_grid(g), g.ffn_multiple, seconds)
    return section, Permutations(ffn, heads, ffn_scores, head_scores)


def select_layers(ctx: Context, method: str, scorer: str, on_call: Callable[[], None] | None = None) -> DepthSection:
    from edgekit.elastic.depth import Calibration as Hidden
    from edgekit.elastic.depth import select_depth

    if ctx.hidden is None:  # baselines select from the same hidden states: compute them once
        ctx.hidden = Hidden(ctx.model, ctx.depth_ids)
    depth = select_depth(ctx.model, ctx.depth_ids, method, scorer, ctx.min_depth, on_call=on_call, calib=ctx.hidden)
    protected = sorted({0, ctx.geometry.num_layers - 1})
    return DepthSection(
        depth.method,
        depth.scorer,
        ctx.min_depth,
        protected,
        depth.layer_sets,
        depth.scores,
        depth.scorer_calls,
        round(depth.seconds, 2),
    )


def assemble(ctx: Context, depth: DepthSection, width: WidthSection) -> Plan:
    req = ctx.req
    return Plan(
        model=ctx.ident,
        geometry=ctx.geometry,
        depth=depth,
        width=width,
        calibration=Calibration(
            req.calib.name, sha256_file(req.calib), req.seq_len, ctx.depth_ids.numel(), ctx.width_ids.numel()
        ),
        edgekit_version=__version__,
        created=utc_now(),
    )


def build_plan(
    req: PlanRequest,
    on_stage: Callable[[str], Any] | None = None,
    on_call: Callable[[], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[Plan, Permutations]:
    """Everything `plan` computes, in memory; the caller writes it (atomically)."""
    from edgekit.elastic.depth import dp_calls

    stage = on_stage or (lambda _label: None)
    ctx = prepare(req, stage)
    stage("ranking FFN channels and heads")
    width, perms = rank_width(ctx, req.width_method)
    stage("selecting layers")
    if on_total is not None:
        n = ctx.geometry.num_layers
        on_total(dp_calls(n, ctx.min_depth, {0, n - 1}) if req.method == "amoeba" else 0)
    depth = select_layers(ctx, req.method, req.scorer, on_call)
    return assemble(ctx, depth, width), perms


DEPTH_BASELINES = ("shortgpt", "angular", "last")
WIDTH_BASELINES = ("magnitude", "activation")


def baselines(
    plan: Plan,
    perms: Permutations,
    calib: Path,
    kinds: list[str],
    model: str | None = None,
    on_stage: Callable[[str], Any] | None = None,
) -> list[tuple[Plan, Permutations]]:
    """Baseline plans on the plan's own calibration tokens: each changes one axis and keeps ours for the other
    (a depth baseline keeps our width order, a width baseline our layer sets), so a comparison isolates it."""
    unknown = [k for k in kinds if k not in DEPTH_BASELINES + WIDTH_BASELINES]
    if unknown:
        raise UsageError(f"unknown baseline '{unknown[0]}'; choose from {', '.join(DEPTH_BASELINES + WIDTH_BASELINES)}")
    if sha256_file(calib) != plan.calibration.sha256:
        raise UsageError(
            f"{calib} is not the calibration text plan {plan.name} was made with ({plan.calibration.file}): "
            "baselines must see the same tokens"
        )
    cal = plan.calibration
    req = PlanRequest(
        model or plan.model.ref, calib, plan.depth.method, plan.depth.scorer if plan.depth.scorer != "-" else "ppl",
        plan.width.method, cal.depth_tokens, cal.width_tokens, cal.seq_len, plan.depth.min_depth,
        plan.width.ffn_floor,
    )  # fmt: skip
    ctx = prepare(req, on_stage or (lambda _label: None))
    if ctx.ident.digest != plan.model.digest:
        raise UsageError(f"plan {plan.name} was made for other weights than {req.model}")
    out = []
    for kind in kinds:
        if on_stage:
            on_stage(f"baseline {kind}")
        if kind in DEPTH_BASELINES:
            base = assemble(ctx, select_layers(ctx, kind, "-"), plan.width)
            base.permutations_sha256 = plan.permutations_sha256
            out.append((base, perms))
        else:
            width, wperms = rank_width(ctx, kind)
            out.append((assemble(ctx, plan.depth, width), wperms))
    return out

"""TrimLLM: a domain checkpoint made by dropping layers one at a time while fine-tuning on the domain.

Fine-tune on the domain; every `trim.interval` steps, try removing each remaining layer in turn (the block
becomes the identity), score the domain's perplexity on a calibration split held out of the training data,
and drop the layer whose removal hurts least (ties, within `trim.tie_tolerance`, go to the largest activation
norm as in TrimLLM's code, then to the earlier layer); go on fine-tuning the shallower model until
`trim.depth`. Two changes to the paper, both for one checkpoint that serves every depth reached:
- the calibration split is the end of the training text, never the evaluation data (TrimLLM reads the target
  task's evaluation split), and the score is the perplexity's minimum, not its maximum;
- each step trains a sandwich of the depths reached so far (the full model on the data, the current depth and
  one depth between, in-place distilled from the full model, as `train` does), so the adapters serve every
  depth on the way and `deploy` can pick any of them, where TrimLLM keeps only the last model.

The result is an elastic checkpoint whose plan's layer sets are the drop order: each depth reached is the
shape `dN` (full width), a standard Llama checkpoint for every runtime. Its manifest records the domain
data's name and hash, the calibration split and every drop with its candidates' scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgekit.elastic.recipe import Recipe
from edgekit.elastic.skip import PARTS, names_of, parse_unit, unit_name
from edgekit.elastic.train import Trainer
from edgekit.errors import UsageError
from edgekit.shapes import Shape

METRIC = "domain_ppl"  # what a domain checkpoint's shapes are ranked by


Candidate = int | tuple[int, str]  # a layer, or (layer, "attn" | "mlp") with trim.granularity=module


def _key(text: str) -> Candidate:
    return int(text) if str(text).isdigit() else parse_unit(text)


def _name(candidate: Candidate) -> str:
    return str(candidate) if isinstance(candidate, int) else unit_name(candidate)


@dataclass
class Drop:
    step: int  # dropped after this many training steps
    layer: int
    depth: int  # the depth after the drop
    score: float  # calibration perplexity without it: the new depth's (module: after both blocks of the drop)
    tied: list[Candidate]  # the candidates within the tie tolerance of the best (the dropped one among them)
    scores: dict[Candidate, float]  # every candidate's calibration perplexity without it
    norms: dict[Candidate, float]  # every candidate's activation norm (its residual update, mean L2 per token)
    block: str = "layer"  # what went: the whole layer, or its "attn" or "mlp" (trim.granularity=module)

    @property
    def dropped(self) -> Candidate:
        return self.layer if self.block == "layer" else (self.layer, self.block)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tied"] = [_name(u) if not isinstance(u, int) else u for u in self.tied]
        data["scores"] = {_name(k): round(v, 6) for k, v in self.scores.items()}
        data["norms"] = {_name(k): round(v, 6) for k, v in self.norms.items()}
        if self.block == "layer":
            data.pop("block")  # layer drops are written as they always were
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Drop:
        return cls(int(data["step"]), int(data["layer"]), int(data["depth"]), float(data["score"]),
                   [u if isinstance(u, int) else _key(u) for u in data["tied"]],
                   {_key(k): float(v) for k, v in data["scores"].items()},
                   {_key(k): float(v) for k, v in data["norms"].items()}, data.get("block", "layer"))  # fmt: skip


# ------------------------------------------------------------------ the maths


def choose_drop(scores: dict[Any, float], norms: dict[Any, float], tolerance: float) -> tuple[Any, list[Any]]:
    """The layer (or block) to drop and the tied candidates: the lowest calibration perplexity without it; those
    within `tolerance` (relative) of it tie, and the largest activation norm among them goes (TrimLLM's
    `activation` tie-breaker), then the earlier one (a layer's attention comes before its MLP)."""
    best = min(scores.values())
    tied = sorted(u for u, v in scores.items() if v <= best * (1 + tolerance))
    return max(tied, key=lambda u: (norms[u], -tied.index(u))), tied


def blocks_after(num_layers: int, drops: list[Drop]) -> tuple[list[int], frozenset[tuple[int, str]]]:
    """The layers left after `drops` and the blocks dropped inside them: a layer whose two blocks both went
    is gone."""
    layers, skip = list(range(num_layers)), set()
    for d in drops:
        if d.block == "layer":
            layers.remove(d.layer)
            continue
        skip.add((d.layer, d.block))
        if all((d.layer, p) in skip for p in PARTS):
            layers.remove(d.layer)
            skip -= {(d.layer, p) for p in PARTS}
    return layers, frozenset(skip)


def drop_steps(num_layers: int, depth: int, interval: int) -> list[int]:
    """After which step each drop happens: every `interval` steps until `depth` is reached."""
    return [interval * (k + 1) for k in range(num_layers - depth)]


def calibration_split(
    stream: torch.Tensor, tokens: int, seq_len: int, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training stream, calibration sequences): the last `tokens` of the domain text are held out."""
    rows = tokens // seq_len
    need = rows * seq_len + seq_len  # the calibration split and at least one training sequence
    if stream.numel() < need:
        raise UsageError(
            f"domain data {source} is too small: {stream.numel():,} tokens; trimming needs at least {need:,} "
            f"({rows * seq_len:,} held out for calibration, trim.calibration_tokens, and some to train on)"
        )
    cut = stream.numel() - rows * seq_len
    return stream[:cut], stream[cut:].view(rows, seq_len)


def _scan(
    model: Any, calib: torch.Tensor, candidates: list[Any], step: Callable[[Any, torch.Tensor], torch.Tensor],
    rest: Callable[[int, Any, torch.Tensor], torch.Tensor], chunk: int,
) -> tuple[dict[Any, float], dict[Any, float]]:  # fmt: skip
    """Calibration perplexity without each candidate in turn and each one's activation norm. `step(c, h)` runs
    candidate c on h (the hidden state before each candidate is computed once); `rest(k, c, h)` runs what follows
    the k-th candidate c from h, the state before it, so removing c reruns only what comes after it."""
    nll = dict.fromkeys(candidates, 0.0)
    norm = dict.fromkeys(candidates, 0.0)
    count = 0
    for start in range(0, calib.shape[0], chunk):
        ids = calib[start : start + chunk].to(model.embed.device)
        hidden = [F.embedding(ids, model.embed)]
        for c in candidates:
            hidden.append(step(c, hidden[-1]))
        targets = ids[:, 1:].reshape(-1)
        for k, c in enumerate(candidates):
            logits = model.head(rest(k, c, hidden[k]))[:, :-1]
            nll[c] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum").item()
            norm[c] += (hidden[k + 1] - hidden[k]).float().norm(dim=-1).sum().item()
        count += targets.numel()
    tokens = calib.shape[0] * calib.shape[1]
    return ({c: float(torch.tensor(v / count).exp()) for c, v in nll.items()},
            {c: v / tokens for c, v in norm.items()})  # fmt: skip


@torch.no_grad()
def removal_scores(
    model: Any, calib: torch.Tensor, layers: list[int], shape: Shape, chunk: int = 4
) -> tuple[dict[int, float], dict[int, float]]:
    """Calibration perplexity of the model without each of `layers` in turn, and each layer's activation norm."""
    return _scan(model, calib, layers, lambda i, h: model.run_layers(h, [i], shape),
                 lambda k, _i, h: model.run_layers(h, layers[k + 1 :], shape) if k + 1 < len(layers) else h,
                 chunk)  # fmt: skip


@torch.no_grad()
def block_removal_scores(
    model: Any, calib: torch.Tensor, layers: list[int], skip: frozenset[tuple[int, str]], shape: Shape,
    chunk: int = 4,
) -> tuple[dict[tuple[int, str], float], dict[tuple[int, str], float]]:  # fmt: skip
    """`removal_scores` for single blocks: the calibration perplexity without each remaining attention or MLP
    block in turn, and each block's activation norm."""
    other = {"attn": "mlp", "mlp": "attn"}

    def step(block: tuple[int, str], h: torch.Tensor) -> torch.Tensor:  # the layer with its other block skipped
        i, p = block
        return model.run_layers(h, [i], shape, skip | {(i, other[p])})

    def rest(_k: int, block: tuple[int, str], h: torch.Tensor) -> torch.Tensor:
        # from the state before the block: the rest of its layer (the MLP, when the attention goes), then on
        i, p = block
        without = skip | {(i, p)} | ({(i, "attn")} if p == "mlp" else set())
        return model.run_layers(h, layers[layers.index(i) :], shape, frozenset(without))

    blocks = [(i, p) for i in layers for p in PARTS if (i, p) not in skip]
    return _scan(model, calib, blocks, step, rest, chunk)


@torch.no_grad()
def calibration_ppl(
    model: Any, calib: torch.Tensor, layers: list[int], shape: Shape, chunk: int = 4,
    skip: frozenset[tuple[int, str]] = frozenset(),
) -> float:  # fmt: skip
    total, count = 0.0, 0
    for start in range(0, calib.shape[0], chunk):
        ids = calib[start : start + chunk].to(model.embed.device)
        logits = model.head(model.run_layers(F.embedding(ids, model.embed), layers, shape, skip))[:, :-1]
        targets = ids[:, 1:].reshape(-1)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum").item()
        count += targets.numel()
    return float(torch.tensor(total / count).exp())


# ------------------------------------------------------------------ the run


class Trimmer(Trainer):
    """The one-for-all trainer on a grid of depths that grows by one after every drop."""

    def __init__(self, recipe: Recipe, plan: Any, elastic: Any, sequences: Any, calib: torch.Tensor,
                 run_dir: Path) -> None:  # fmt: skip
        g = elastic.geometry
        self.full_width = (100, g.heads_per_group)
        super().__init__(recipe, plan, elastic, sequences, [g.full], run_dir)
        self.calib = calib
        self.schedule = drop_steps(g.num_layers, recipe.trim.depth, recipe.trim.interval)  # one per depth
        self.drops: list[Drop] = []
        self.inherited = 0  # drops taken over from train.init's domain checkpoint (made before this run)
        self.frozen: list[int] = []  # layers whose adapters the sparse update keeps frozen
        self.first_scan: dict[int, float] | None = None
        self.start_score: float | None = None  # the full model's calibration perplexity before training
        self.model.layer_sets = {g.num_layers: list(range(g.num_layers))}
        self._hooks: list[Any] = []

    # -------------------------------------------------------------- depths

    def at_depth(self, depth: int) -> Shape:
        return Shape(depth, *self.full_width)

    @property
    def layers(self) -> list[int]:
        """The layers of the current (shallowest) model."""
        return self.model.layer_sets[min(self.model.layer_sets)]

    def logged_shapes(self) -> list[Shape]:
        g = self.model.geometry
        return [self.at_depth(d) for d in range(g.num_layers, self.recipe.trim.depth - 1, -1)]

    @property
    def per_drop(self) -> int:
        """Candidates removed at each drop: a layer, or two blocks (so that each depth keeps 2 x depth blocks)."""
        return 2 if self.recipe.trim.granularity == "module" else 1

    def _grid_from_drops(self) -> None:
        g = self.model.geometry
        sets, skips = {g.num_layers: list(range(g.num_layers))}, {}
        for k in range(self.per_drop, len(self.drops) + 1, self.per_drop):
            layers, skip = blocks_after(g.num_layers, self.drops[:k])
            depth = g.num_layers - k // self.per_drop
            sets[depth] = layers
            if skip:
                skips[depth] = skip
        self.model.layer_sets, self.model.skips = sets, skips
        self.grid = [self.at_depth(d) for d in sorted(sets, reverse=True)]

    # -------------------------------------------------------------- drops (Trainer.step samples the sandwich
    # of the depths reached from self.grid: the full model, the current depth, and those between)

    def after_step(self) -> None:
        made = self.made
        if made < len(self.schedule) and self.state.step == self.schedule[made]:
            self.drop()

    @property
    def made(self) -> int:
        """Drops this run has made (those it took over not counted)."""
        return (len(self.drops) - self.inherited) // self.per_drop

    def inherit(self, drops: list[Drop]) -> None:
        """Start from a domain checkpoint's drops: its depths are this run's grid from the first step, and the
        schedule counts the drops still to make from its shallowest depth down to trim.depth."""
        g = self.model.geometry
        self.drops, self.inherited = list(drops), len(drops)
        self._grid_from_drops()
        start = g.num_layers - len(drops) // self.per_drop
        self.schedule = drop_steps(start, self.recipe.trim.depth, self.recipe.trim.interval)

    def drop(self) -> Drop:
        n, tolerance = self.model.geometry.num_layers, self.recipe.trim.tie_tolerance
        depth = n - len(self.drops) // self.per_drop - 1
        if self.per_drop == 1:
            layers = self.layers
            scores, norms = removal_scores(self.model.eval(), self.calib, layers, self.at_depth(len(layers) - 1))
            layer, tied = choose_drop(scores, norms, tolerance)
            self.drops.append(Drop(self.state.step, layer, depth, scores[layer], tied, scores, norms))
        else:  # two greedy scans: each removes the block whose removal hurts least given those gone before
            for _ in range(self.per_drop):
                layers, skip = blocks_after(n, self.drops)
                scores, norms = block_removal_scores(self.model.eval(), self.calib, layers, skip,
                                                     self.at_depth(depth))  # fmt: skip
                (layer, block), tied = choose_drop(scores, norms, tolerance)
                self.drops.append(Drop(self.state.step, layer, depth, scores[(layer, block)], tied, scores, norms,
                                       block))  # fmt: skip
        self._grid_from_drops()
        return self.drops[-1]

    def scan(self) -> None:
        """Before any training: the start's calibration perplexity and, for the sparse update, which layers'
        adapters to freeze (the least important: their removal hurts least)."""
        layers, n = self.layers, self.model.geometry.num_layers
        self.start_score = calibration_ppl(self.model.eval(), self.calib, list(range(n)), self.at_depth(n))
        share = self.recipe.trim.sparse_update
        if share > 0:
            scores, _ = removal_scores(self.model.eval(), self.calib, layers, self.at_depth(len(layers) - 1))
            self.first_scan = scores
            count = min(len(layers) - 1, round(share * len(layers)))
            self.frozen = sorted(sorted(layers, key=lambda i: (scores[i], i))[:count])
        self.freeze()

    def freeze(self) -> None:
        """Zero the gradients of the frozen layers' adapters (their first dimension is the layer): with zero
        gradients from the first step AdamW never moves them."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if not self.frozen:
            return
        index = torch.tensor(self.frozen, device=self.device)
        for name, p in self.smol.named_parameters():
            if name.startswith(("A.", "B.")):
                self._hooks.append(p.register_hook(lambda grad, i=index: grad.index_fill(0, i, 0.0)))

    # -------------------------------------------------------------- resume

    def extra_state(self) -> dict[str, Any]:
        return {"trim": {"drops": [d.to_dict() for d in self.drops], "frozen": self.frozen,
                         "start_score": self.start_score, "inherited": self.inherited,
                         "first_scan": {str(k): v for k, v in (self.first_scan or {}).items()} or None}}  # fmt: skip

    def restore_extra(self, state: dict[str, Any]) -> None:
        trim = state.get("trim") or {}
        drops = [Drop.from_dict(d) for d in trim.get("drops", [])]
        self.inherit(drops[: int(trim.get("inherited") or 0)])
        self.drops = drops
        self.frozen = [int(i) for i in trim.get("frozen", [])]
        self.start_score = trim.get("start_score")
        scan = trim.get("first_scan")
        self.first_scan = {int(k): float(v) for k, v in scan.items()} if scan else None
        self._grid_from_drops()
        self.freeze()

    # -------------------------------------------------------------- what the checkpoint records

    def depth_scores(self) -> dict[int, float]:
        """Each depth's calibration perplexity when it was reached (the full model's before training)."""
        n = self.model.geometry.num_layers
        return {n: float(self.start_score or 0.0), **{d.depth: d.score for d in self.drops}}


def check_trim_recipe(recipe: Recipe, num_layers: int, start_depth: int | None = None) -> None:
    """`start_depth`: the shallowest depth of the domain checkpoint the run continues (train.init)."""
    t, r = recipe.trim, recipe.train
    if not 1 <= t.depth < num_layers:
        raise UsageError(f"trim.depth {t.depth} is outside 1..{num_layers - 1}: the model has {num_layers} layers "
                         "and trimming drops at least one")  # fmt: skip
    start = start_depth or num_layers
    if t.depth > start:
        raise UsageError(f"trim.depth {t.depth} is deeper than train.init's domain checkpoint, already trimmed to "
                         f"depth {start}: set trim.depth={start} (go on training it) or less")  # fmt: skip
    need = (start - t.depth) * t.interval
    if r.steps < need:
        raise UsageError(f"train.steps ({r.steps}) must cover {start - t.depth} drops x trim.interval "
                         f"({t.interval}) = {need} steps")  # fmt: skip
    if recipe.train.grid:
        raise UsageError("train.grid is not for trim recipes: the depths reached are the grid")


def prepare_trim(recipe: Recipe, run_dir: Path, resume: bool) -> Trimmer:
    """Load the plan, weights, adapters and domain data (its calibration split held out); restore the latest
    checkpoint when resuming."""
    from transformers import AutoTokenizer

    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.elastic.data import token_stream_and_mask
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.train import (
        TRAINING_DATA,
        existing_run,
        initial_adapters,
        open_run,
        resolve_device,
        training_sequences,
    )

    recipe.check_files(TRAINING_DATA)
    plan = load_plan(recipe.plan)
    inherited = inherited_drops(recipe)
    per_drop = 2 if recipe.trim.granularity == "module" else 1
    check_trim_recipe(recipe, plan.geometry.num_layers, plan.geometry.num_layers - len(inherited) // per_drop)
    if recipe.smol.gated and not recipe.train.init:
        raise UsageError("a trim run trains one plain LoRA: set smol.gated=false smol.shared=false")
    smol, start = initial_adapters(recipe, plan)
    existing = existing_run(run_dir, resume)
    device = resolve_device(recipe.train.device)
    tokenizer = AutoTokenizer.from_pretrained(base_folder(plan, recipe.model))
    d = recipe.data
    stream, mask = token_stream_and_mask(recipe.file("data.train"), tokenizer, d.format, d.max_tokens)
    train_stream, calib = calibration_split(stream, recipe.trim.calibration_tokens, d.seq_len, d.train)
    sequences = training_sequences(recipe, tokenizer, train_stream,
                                   None if mask is None else mask[: train_stream.numel()])  # fmt: skip
    elastic = load_elastic(plan, recipe.model, device)
    elastic.smol = smol.to(device)
    trimmer = Trimmer(recipe, plan, elastic, sequences, calib, run_dir)
    trimmer.init = start
    if inherited:
        trimmer.inherit(inherited)
    open_run(trimmer, tokenizer, existing)
    if existing is None:
        trimmer.scan()
    return trimmer


def inherited_drops(recipe: Recipe) -> list[Drop]:
    """The drops of the domain checkpoint train.init names ([] for a general checkpoint or none): a trim run
    from it goes on from its shallowest depth, every depth it reached still a shape."""
    if not recipe.train.init:
        return []
    from edgekit.elastic.checkpoint import load_checkpoint

    ckpt = load_checkpoint(recipe.train.init)
    domain = ckpt.manifest.get("domain") or {}
    if not domain.get("drops"):
        return []
    if domain.get("granularity", "layer") != recipe.trim.granularity:
        raise UsageError(f"train.init {ckpt.name} dropped by {domain.get('granularity', 'layer')}; this recipe "
                         f"drops by {recipe.trim.granularity}: set trim.granularity to match")  # fmt: skip
    return [Drop.from_dict(d) for d in domain["drops"]]


def domain_plan(trimmer: Trimmer, out: Path) -> Any:
    """The plan of the domain checkpoint, written to `out`: the base plan's weights and permutations (the same
    file), its layer sets the drop order, its widths the full width only (where the adapters were trained)."""
    import shutil

    from edgekit.artifacts import atomic_dir, write_manifest
    from edgekit.elastic.plan import PERMS_FILE, PLAN_JSON, DepthSection, load_plan

    base = trimmer.plan
    sets = {d: list(v) for d, v in trimmer.model.layer_sets.items()}
    skips = {d: names_of(v) for d, v in trimmer.model.skips.items()}
    depth = DepthSection(method="trimllm", scorer="ppl", min_depth=min(sets), protected=[], layer_sets=sets,
                         scores=trimmer.depth_scores(), scorer_calls=sum(len(d.scores) for d in trimmer.drops),
                         seconds=0.0, skips=skips)  # fmt: skip
    width = dataclasses.replace(base.width, ffn_floor=100, heads_floor=base.geometry.heads_per_group, grid=[100])
    plan = dataclasses.replace(base, depth=depth, width=width, path=None)
    with atomic_dir(out, replace=True) as tmp:
        shutil.copyfile(base.path / PERMS_FILE, tmp / PERMS_FILE)
        write_manifest(tmp / PLAN_JSON, plan.to_json())
    return load_plan(out)


def finish_trim(trimmer: Trimmer, start_step: int, evaluate: bool, half: bool,
                on_shape: Callable[[str], None] | None = None) -> Any:  # fmt: skip
    """The domain checkpoint (RUN/elastic): every depth reached a shape; its manifest names the domain data and
    the drops; its accuracy table, when `evaluate`, on every depth reached."""
    from edgekit.elastic.checkpoint import set_accuracy, write_checkpoint
    from edgekit.elastic.recipe import DATA_KEYS
    from edgekit.elastic.source import Source
    from edgekit.elastic.train import RunResult, data_files

    r, state = trimmer.recipe, trimmer.state
    made = trimmer.made
    if made < len(trimmer.schedule):
        raise UsageError(f"the run has made {made} of its {len(trimmer.schedule)} drops: resume it")
    files = data_files(r, tuple(f"{a}.{b}" for a, b in DATA_KEYS))
    training = {"steps": state.step, "tokens": state.tokens, "seconds": round(state.seconds, 1),
                "device": str(trimmer.device), "resumed_from": start_step or None, "data": files}  # fmt: skip
    domain = {
        "name": r.data.train,
        "sha256": files["data.train"]["sha256"],
        "metric": METRIC,
        "granularity": r.trim.granularity,
        "calibration": {
            "tokens": int(trimmer.calib.numel()),
            "sequences": int(trimmer.calib.shape[0]),
            "from": "the last tokens of data.train, held out of training",
        },  # fmt: skip
        "init": trimmer.init,
        "inherited_drops": trimmer.inherited,  # the first drops: train.init's, made before this run
        "frozen_layers": trimmer.frozen,
        "drops": [d.to_dict() for d in trimmer.drops],
        "depths": sorted(trimmer.model.layer_sets, reverse=True),
    }
    plan = domain_plan(trimmer, trimmer.run_dir / "domain-plan")
    out = trimmer.run_dir / "elastic"
    write_checkpoint(out, plan, trimmer.smol, r.to_dict(), training, None, half=half, force=True, domain=domain)
    result = RunResult(out, training, None)
    if evaluate:
        source = Source.resolve(elastic=str(out))
        result.accuracy = evaluate_depths(source, r.eval_settings(), on_shape)
        set_accuracy(source.checkpoint, result.accuracy)
    return result


def evaluate_depths(source: Any, settings: Any, on_shape: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A domain checkpoint's accuracy table: every depth it reached, at full width."""
    from edgekit.elastic.accuracy import evaluate_shapes

    return evaluate_shapes(source.load(), source.tokenizer(), source.plan, source.plan.space(), settings, on_shape)

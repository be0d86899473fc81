"""The plan: stage-1 output, a folder that says which layers each depth keeps and how widths nest.

    PLAN/plan.json                  model identity (weights digest), geometry, layer sets and
                                    calibration scores per depth, width method and range,
                                    calibration provenance, hash of the permutations file
    PLAN/permutations.safetensors   per layer: FFN channel order and query-head order (most
                                    important first; heads stay inside their KV group), and scores

Plans for the built-in models ship inside the package (edgekit/plans/<name>/), so `--plan
smollm2-135m` works without planning first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.artifacts import read_format_json, sha256_file, write_manifest
from edgekit.errors import IntegrityError, UsageError
from edgekit.formats import tag
from edgekit.shapes import Geometry, Shape, parse_grid, parse_shape

FORMAT = tag("edgekit-plan")
PLAN_JSON = "plan.json"
PERMS_FILE = "permutations.safetensors"
PREDICTOR_FILE = "accuracy-predictor.json"  # edgekit.elastic.predictor.FILE: its fit data is held out


@dataclass
class ModelIdentity:
    name: str
    ref: str  # what `--model` takes to find the weights again: registry name, hub id or folder
    digest: str  # weights content digest (edgekit.models.weights.weights_digest)
    architecture: str


@dataclass
class DepthSection:
    method: str  # amoeba | shortgpt | angular | last
    scorer: str  # for amoeba: ppl | angular | block-influence
    min_depth: int
    protected: list[int]
    layer_sets: dict[int, list[int]]
    scores: dict[int, float]  # calibration perplexity of each depth's layer set at full width
    scorer_calls: int
    seconds: float
    # a module-granular domain checkpoint's blocks dropped inside the kept layers, per depth ("7.attn"): its
    # depth d keeps 2d blocks, so a layer set may hold more than d layers (edgekit.elastic.skip)
    skips: dict[int, list[str]] = field(default_factory=dict)


@dataclass
class WidthSection:
    method: str  # flap | magnitude | activation
    ffn_floor: int  # the narrowest FFN offered, in percent: every multiple of ffn_multiple from it to 100 runs
    grid: list[int]  # coupled widths of the default grid (frontier, training, profiling)
    ffn_multiple: int
    seconds: float
    # the fewest query heads per KV group offered (a domain checkpoint, trained at full width, offers only all)
    heads_floor: int = 1


@dataclass
class Calibration:
    file: str
    sha256: str
    seq_len: int
    depth_tokens: int
    width_tokens: int


@dataclass
class Permutations:
    ffn: list[torch.Tensor]
    heads: list[torch.Tensor]  # group-major order of Hugging Face head indices, sorted within groups
    ffn_scores: list[torch.Tensor]
    head_scores: list[torch.Tensor]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(len(self.ffn)):
            out[f"layers.{i}.ffn"] = self.ffn[i].to(torch.int32).contiguous()
            out[f"layers.{i}.heads"] = self.heads[i].to(torch.int32).contiguous()
            out[f"layers.{i}.ffn_score"] = self.ffn_scores[i].float().contiguous()
            out[f"layers.{i}.head_score"] = self.head_scores[i].float().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], geometry: Geometry) -> Permutations:
        n = geometry.num_layers
        try:
            perms = cls(
                [tensors[f"layers.{i}.ffn"].long() for i in range(n)],
                [tensors[f"layers.{i}.heads"].long() for i in range(n)],
                [tensors[f"layers.{i}.ffn_score"] for i in range(n)],
                [tensors[f"layers.{i}.head_score"] for i in range(n)],
            )
        except KeyError as exc:
            raise IntegrityError(f"the plan's permutations lack {exc.args[0]}") from None
        for p in perms.ffn:
            if sorted(p.tolist()) != list(range(geometry.ffn)):
                raise IntegrityError("the plan's FFN permutation is not a permutation of the model's channels")
        per = geometry.heads_per_group
        for p in perms.heads:
            for g in range(geometry.num_kv_heads):
                if sorted(p[g * per : (g + 1) * per].tolist()) != list(range(g * per, (g + 1) * per)):
                    raise IntegrityError("the plan's head order moves a query head out of its KV group")
        return perms


@dataclass
class Plan:
    model: ModelIdentity
    geometry: Geometry
    depth: DepthSection
    width: WidthSection
    calibration: Calibration
    edgekit_version: str
    created: str
    permutations_sha256: str = ""
    format: str = FORMAT
    path: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        if self.path is None:
            return self.model.name
        # a checkpoint's copy of its plan is PLAN=CKPT/plan: named by its checkpoint
        return self.path.parent.name if self.path.name == "plan" else self.path.name

    @property
    def layer_sets(self) -> dict[int, list[int]]:
        return self.depth.layer_sets

    @property
    def depths(self) -> list[int]:
        return sorted(self.depth.layer_sets)

    @property
    def full(self) -> Shape:
        return self.geometry.full

    def ranges(self) -> str:
        ffn = self.geometry.ffn_grid(self.width.ffn_floor)
        lo, hi = min(self.depths), max(self.depths)
        contiguous = len(self.depths) == hi - lo + 1
        depths = f"depths {lo}..{hi}" if contiguous else "depths " + ", ".join(map(str, sorted(self.depths)))
        if self.full_width_only:
            return f"{depths} at full width"
        return (f"{depths}, FFN f{ffn[-1]}..f100 (in steps of {self.geometry.ffn_unit} channels), "
                f"h{self.heads_floor}..h{self.geometry.heads_per_group}")  # fmt: skip

    @property
    def full_width_only(self) -> bool:
        """A plan that offers depths alone (a domain checkpoint's)."""
        g = self.geometry
        return g.ffn_grid(self.width.ffn_floor) == [100] and self.heads_floor == g.heads_per_group

    @property
    def heads_floor(self) -> int:
        return min(max(1, self.width.heads_floor), self.geometry.heads_per_group)

    def check_shape(self, shape: Shape) -> Shape:
        """The shape's canonical form, or a UsageError saying why it is outside the plan and what is nearest."""
        g = self.geometry
        shape = g.canonical(shape)
        floor = g.ffn_grid(self.width.ffn_floor)[-1]
        near = Shape(
            min(self.depths, key=lambda d: (abs(d - shape.depth), -d)),
            max(shape.ffn, floor),
            min(max(shape.heads, self.heads_floor), g.heads_per_group),
        )
        if near == shape:
            return shape
        if shape.depth not in self.depth.layer_sets:
            why = f"it offers {self.ranges()}"
        else:
            why = g.problem(shape, self.width.ffn_floor) or f"it offers {self.ranges()}"
            if self.full_width_only or (shape.heads < self.heads_floor and g.problem(shape) is None):
                why = f"it offers {self.ranges()}"
            why = why.split("; nearest")[0]
        raise UsageError(f"shape {shape} is outside plan {self.name}: {why}; nearest valid shape: {near}")

    def shape(self, text: str) -> Shape:
        return self.check_shape(parse_shape(text, self.geometry))

    def grid(self, text: str | None = None) -> list[Shape]:
        """Shapes from a grid string, or the plan's default grid: the full depth, 80 %, 2/3 and 1/2 of it, at
        the coupled widths of the width section (what profiling and training sample by default)."""
        if text:
            return list(dict.fromkeys(self.check_shape(s) for s in parse_grid(text, self.geometry)))
        n = self.geometry.num_layers
        depths = sorted({n, *(d for d in self.depths if d in default_depths(n, min(self.depths)))}, reverse=True)
        return list(dict.fromkeys(self.geometry.coupled(d, w) for d in depths for w in self.width.grid))

    def space(self) -> list[Shape]:
        """Every shape the plan offers: each depth x each FFN width from the floor x each head count per group."""
        g = self.geometry
        ffn = g.ffn_grid(self.width.ffn_floor)
        return [Shape(d, f, h) for d in sorted(self.depths, reverse=True) for f in ffn
                for h in range(g.heads_per_group, self.heads_floor - 1, -1)]  # fmt: skip

    def held_out_skip(self, text: Path, past_predictor: bool = True) -> int:
        """How many leading tokens of `text` to skip so an evaluation never scores what the plan was fitted on:
        those planning read when `text` is the calibration file, and (`past_predictor`) those the plan's
        accuracy predictor was fitted on when it was fitted on `text`; else none."""
        sha = sha256_file(text)
        skip = (
            max(self.calibration.depth_tokens, self.calibration.width_tokens) if sha == self.calibration.sha256 else 0
        )
        stored = self.path / PREDICTOR_FILE if self.path is not None else None
        if past_predictor and stored is not None and stored.is_file():
            data = json.loads(stored.read_text()).get("data") or {}
            if data.get("sha256") == sha:
                skip = max(skip, int(data.get("skip_tokens", 0)) + int(data.get("tokens", 0)))
        return skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        depth = data["depth"]
        depth["layer_sets"] = {str(k): v for k, v in sorted(self.depth.layer_sets.items())}
        depth["scores"] = {str(k): v for k, v in sorted(self.depth.scores.items())}
        if self.depth.skips:
            depth["skips"] = {str(k): v for k, v in sorted(self.depth.skips.items())}
        else:
            depth.pop("skips")  # plans with whole layers only are written as before
        return data

    def skips_at(self, depth: int) -> frozenset[tuple[int, str]]:
        """The blocks dropped inside depth `depth`'s layers (empty unless the plan is module-granular)."""
        from edgekit.elastic.skip import units_of

        return units_of(self.depth.skips.get(depth))


def default_depths(num_layers: int, min_depth: int) -> set[int]:
    """Full depth, 80 %, 2/3 and 1/2 of it (30 -> 30, 24, 20, 15), within the plan's range."""
    return {
        d for d in (num_layers, round(num_layers * 0.8), round(num_layers * 2 / 3), num_layers // 2) if d >= min_depth
    }


def save_plan(plan: Plan, perms: Permutations, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file(perms.tensors(), str(folder / PERMS_FILE), metadata={"format": FORMAT})
    plan.permutations_sha256 = sha256_file(folder / PERMS_FILE)
    write_manifest(folder / PLAN_JSON, plan.to_json())


def shipped_dir() -> Path:
    from edgekit.data import shipped

    return shipped("plans")


def shipped_plans() -> list[str]:
    return sorted(p.name for p in shipped_dir().iterdir() if (p / PLAN_JSON).is_file())


def plan_dir(ref: str | Path) -> Path:
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if str(ref) in shipped_plans():
        return shipped_dir() / str(ref)
    shipped = ", ".join(shipped_plans()) or "none"
    raise UsageError(
        f"no plan at '{ref}': give a plan folder (from `edgekit elastic plan`) or a shipped plan ({shipped})"
    )


def load_plan(ref: str | Path) -> Plan:
    folder = plan_dir(ref)
    what = f"plan {folder}"
    data = read_format_json(folder / PLAN_JSON, "edgekit-plan", what)
    try:
        depth = data["depth"]
        depth["layer_sets"] = {int(k): list(v) for k, v in depth["layer_sets"].items()}
        depth["scores"] = {int(k): float(v) for k, v in depth["scores"].items()}
        depth["skips"] = {int(k): [str(u) for u in v] for k, v in depth.get("skips", {}).items()}
        plan = Plan(
            model=ModelIdentity(**data["model"]),
            geometry=Geometry(**data["geometry"]),
            depth=DepthSection(**depth),
            width=WidthSection(**data["width"]),
            calibration=Calibration(**data["calibration"]),
            edgekit_version=data["edgekit_version"],
            created=data["created"],
            permutations_sha256=data["permutations_sha256"],
            format=data["format"],
            path=folder,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{what} is corrupt: {PLAN_JSON} does not describe a plan ({exc})") from None
    n = plan.geometry.num_layers
    for d, layers in plan.layer_sets.items():
        try:
            skips = plan.skips_at(d)
        except ValueError as exc:
            raise IntegrityError(f"{what} is corrupt: depth {d}'s dropped blocks: {exc}") from None
        # a depth keeps 2d blocks: d whole layers, or more layers some of which keep one block
        blocks = 2 * len(layers) - len(skips)
        if (blocks != 2 * d or len(set(layers)) != len(layers) or not all(0 <= i < n for i in layers)
                or not all(i in layers for i, _ in skips) or any(len({p for j, p in skips if j == i}) > 1
                                                                  for i in layers)):  # fmt: skip
            raise IntegrityError(f"{what} is corrupt: the layer set for depth {d} is not {d} distinct layers of {n}")
    return plan


def load_permutations(plan: Plan) -> Permutations:
    from safetensors.torch import load_file

    if plan.path is None:
        raise UsageError("this plan has not been saved: its permutations are still in memory")
    path = plan.path / PERMS_FILE
    if not path.is_file():
        raise IntegrityError(f"plan {plan.path} is incomplete: {PERMS_FILE} is missing")
    if sha256_file(path) != plan.permutations_sha256:
        raise IntegrityError(f"plan {plan.path} is corrupt: {PERMS_FILE} does not match the hash in {PLAN_JSON}")
    return Permutations.from_tensors(load_file(str(path)), plan.geometry)

"""SMOL: AmoebaLLM's shape-aware mixture of LoRAs.

Every adapted projection of every layer holds E LoRA pairs (A_e: rank x in, B_e: out x rank). One
global gate reads the shape, encoded as [layer-active mask of length L, one-hot width over the
plan's grid, width / 100], and maps it through two small linear layers to E logits; the top k are
kept (with Gaussian noise on the logits while training, so every expert gets tried) and softmaxed.
How the chosen experts combine (`mixing`):
- `outputs` (the recipe's choice): a mixture of the experts' LoRA outputs, delta = sum_e g_e B_e A_e x.
  Each expert is a whole LoRA, trained as one; for a fixed shape the mix is one LoRA of rank k x r
  (A = [g_e A_e] stacked, B = [B_e] side by side).
- `factors` (the first shipped checkpoint): A = sum_e g_e A_e, B = sum_e g_e B_e, so the delta holds cross
  terms g_i g_j B_i A_j of experts that never trained as a pair and the mixed A is shorter than any one A
  (about 1/sqrt(k) for random experts). In the stage-2 benchmark this learned slower than one plain LoRA.
Either way a fixed shape's mix merges into the base weights at extraction, at no inference cost.

LoRA and width slicing agree: the adapters live in the ElasticModel's nested (permuted, rank-major
for query heads) coordinates, so a narrower shape uses the prefix rows of B for q/k/v/gate/up and
the prefix columns of A for o/down, exactly the rows and columns its base weights keep.

With `gated=False` there is one LoRA shared by every shape (the plain one-for-all baseline).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgekit.shapes import Geometry, Shape

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class SmolConfig:
    experts: int = 4
    rank: int = 8
    alpha: float = 16.0
    top_k: int = 2
    gate_hidden: int = 64
    noise: float = 1.0  # std of the logit noise while training (noisy top-k)
    gated: bool = True
    # outputs: sum_e g_e B_e A_e (whole LoRAs); factors: A and B mixed apart (the first shipped form).
    # Checkpoints from before the field say nothing and are read as factors (edgekit.formats)
    mixing: str = "outputs"
    # one more LoRA pair per projection that every shape uses at weight 1 beside the routed experts
    # (a shared expert): SMOL then starts as at least the plain one-for-all LoRA; needs mixing=outputs
    shared: bool = False
    # the shared expert's rank (0: the experts' rank); every pair uses the experts' scaling, alpha / rank
    shared_rank: int = 0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    # what the gate reads about a shape beside its layers: ffn-heads (the FFN fraction, the heads fraction and
    # a one-hot head count: any shape of the space) or width (a one-hot over the plan's coupled widths and the
    # width fraction: the checkpoints trained before FFN and heads came apart)
    encoding: str = "ffn-heads"

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise ValueError(f"unknown SMOL target {bad[0]}; choose from {', '.join(TARGETS)}")
        if self.encoding not in ("ffn-heads", "width"):
            raise ValueError(f"encoding must be ffn-heads or width, got {self.encoding}")
        if self.mixing not in ("outputs", "factors"):
            raise ValueError(f"mixing must be outputs or factors, got {self.mixing}")
        if self.shared and (self.mixing != "outputs" or not self.gated):
            raise ValueError(
                "shared needs gated experts mixed as outputs (smol.mixing=outputs); "
                "with smol.gated=false or smol.mixing=factors, set smol.shared=false"
            )
        if self.shared_rank < 0 or (self.shared_rank and not self.shared):
            raise ValueError(f"shared_rank needs smol.shared=true and a rank of at least 1, got {self.shared_rank}")
        if not self.gated:
            self.experts, self.top_k = 1, 1
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"top_k must be between 1 and experts ({self.experts}), got {self.top_k}")
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


def projection_dims(g: Geometry) -> dict[str, tuple[int, int]]:
    """(in, out) of each adaptable projection at full width."""
    q = g.num_heads * g.head_dim
    kv = g.num_kv_heads * g.head_dim
    return {
        "q": (g.hidden, q),
        "k": (g.hidden, kv),
        "v": (g.hidden, kv),
        "o": (q, g.hidden),
        "gate": (g.hidden, g.ffn),
        "up": (g.hidden, g.ffn),
        "down": (g.ffn, g.hidden),
    }


def lora_pairs(
    dims: dict[str, tuple[int, int]], targets: list[str], lead: tuple[int, ...], rank: int
) -> tuple[nn.ParameterDict, nn.ParameterDict]:
    """(A, B) per target, each with the `lead` dimensions (layers, experts) in front."""
    a, b = nn.ParameterDict(), nn.ParameterDict()
    for t in targets:
        fan_in, fan_out = dims[t]
        # LoRA's init: A random (Kaiming-uniform bound), B zero, so training starts at the base model.
        bound = 1 / math.sqrt(fan_in)
        a[t] = nn.Parameter(torch.empty(*lead, rank, fan_in).uniform_(-bound, bound))
        b[t] = nn.Parameter(torch.zeros(*lead, fan_out, rank))
    return a, b


class Smol(nn.Module):
    def __init__(self, geometry: Geometry, config: SmolConfig, widths: list[int]) -> None:
        super().__init__()
        self.geometry, self.config = geometry, config
        self.widths = sorted(widths, reverse=True)
        n, e, r = geometry.num_layers, config.experts, config.rank
        dims = projection_dims(geometry)
        self.A, self.B = lora_pairs(dims, config.targets, (n, e), r)
        if config.shared:
            self.shared_A, self.shared_B = lora_pairs(dims, config.targets, (n,), config.shared_rank or r)
        code = n + self.code_size()
        self.gate = nn.Sequential(nn.Linear(code, config.gate_hidden), nn.GELU(), nn.Linear(config.gate_hidden, e))

    # ------------------------------------------------------------------ gate

    def code_size(self) -> int:
        if self.config.encoding == "width":
            return len(self.widths) + 1
        return 2 + self.geometry.heads_per_group

    def encode(self, shape: Shape, layers: list[int]) -> torch.Tensor:
        """[layer-active mask, then the shape's widths]: what the gate reads."""
        g, n = self.geometry, self.geometry.num_layers
        code = torch.zeros(n + self.code_size())
        code[layers] = 1.0
        if self.config.encoding == "width":
            coupled = [w for w in self.widths if g.coupled(shape.depth, w) == g.canonical(shape)]
            if coupled:
                code[n + self.widths.index(coupled[0])] = 1.0
            code[-1] = (coupled[0] if coupled else shape.ffn) / 100
            return code
        code[n] = shape.ffn / 100
        code[n + 1] = shape.heads / g.heads_per_group
        code[n + 1 + shape.heads] = 1.0
        return code

    def mix(self, shape: Shape, layers: list[int]) -> torch.Tensor:
        """The gate's sparse expert weights (E,) for this shape: top-k softmax, noisy while training."""
        if not self.config.gated:
            return torch.ones(1, device=self.gate[0].weight.device)
        logits = self.gate(self.encode(shape, layers).to(self.gate[0].weight.device))
        if self.training and self.config.noise > 0:
            logits = logits + torch.randn_like(logits) * self.config.noise
        top = torch.topk(logits, self.config.top_k)
        weights = torch.zeros_like(logits)
        return weights.scatter(0, top.indices, torch.softmax(top.values, dim=0))

    # ------------------------------------------------------------------ LoRA

    def factors(
        self, layer: int, target: str, mix: torch.Tensor, rows: int | None = None, cols: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The mixed (A, B) of one projection, sliced to the shape's kept rows / columns (a count for a
        prefix, or an index tensor); None if not adapted."""
        if target not in self.A:
            return None
        if self.config.mixing == "outputs":
            chosen = mix.nonzero().flatten()  # the top-k experts; their stacked factors give sum_e g_e B_e A_e
            a = (mix[chosen, None, None] * self.A[target][layer][chosen]).flatten(0, 1)
            b = self.B[target][layer][chosen].permute(1, 0, 2).flatten(1)
            if self.config.shared:
                a = torch.cat([self.shared_A[target][layer], a])
                b = torch.cat([self.shared_B[target][layer], b], dim=1)
        else:
            a = torch.einsum("e,eri->ri", mix, self.A[target][layer])
            b = torch.einsum("e,eor->or", mix, self.B[target][layer])
        return _sliced(a, b, rows, cols)

    def difference(
        self, layer: int, target: str, mix: torch.Tensor, other: torch.Tensor, rows: int | None = None,
        cols: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
        """(A, B) whose product is the mix `mix` minus the mix `other` of one projection (before scaling), sliced
        like `factors`; None where the two are equal or the projection is not adapted. Mixed as outputs, the
        delta is linear in the mix, so the difference is one LoRA over the experts either mix uses (a shared
        expert cancels); mixed as factors it is not, so both products are stacked."""
        if target not in self.A or torch.equal(mix, other):
            return None
        if self.config.mixing == "outputs":
            weights = mix - other
            chosen = weights.nonzero().flatten()
            a = (weights[chosen, None, None] * self.A[target][layer][chosen]).flatten(0, 1)
            b = self.B[target][layer][chosen].permute(1, 0, 2).flatten(1)
            return _sliced(a, b, rows, cols)
        a1, b1 = self.factors(layer, target, mix, rows, cols)  # type: ignore[misc]
        a0, b0 = self.factors(layer, target, other, rows, cols)  # type: ignore[misc]
        return torch.cat([a1, a0]), torch.cat([b1, -b0], dim=1)

    def delta(
        self, layer: int, target: str, x: torch.Tensor, mix: torch.Tensor, rows: int | None = None,
        cols: Any = None,
    ) -> torch.Tensor | None:  # fmt: skip
        ab = self.factors(layer, target, mix, rows, cols)
        if ab is None:
            return None
        a, b = ab
        return (x @ a.T.to(x.dtype)) @ b.T.to(x.dtype) * self.config.scaling

    def merged(
        self, layer: int, target: str, weight: torch.Tensor, mix: torch.Tensor, rows: int | None, cols: int | None
    ) -> torch.Tensor:
        """weight (already sliced to rows/cols) plus the mixed LoRA's product: what a merged checkpoint holds."""
        ab = self.factors(layer, target, mix, rows, cols)
        if ab is None:
            return weight
        a, b = ab
        return weight + (b.double() @ a.double()).to(weight.dtype) * self.config.scaling

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _sliced(a: torch.Tensor, b: torch.Tensor, rows: int | None, cols: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A LoRA pair cut to a shape's kept rows (a prefix of B) and columns (a prefix or index list of A)."""
    if isinstance(cols, torch.Tensor):
        a = a.index_select(1, cols)
    elif cols is not None:
        a = a[:, :cols]
    if rows is not None:
        b = b[:rows]
    return a, b

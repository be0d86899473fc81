"""`edgekit elastic extract`: over edgekit.elastic.source and edgekit.elastic.extract."""

from __future__ import annotations

import time
from dataclasses import asdict

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.errors import UsageError


def extract_cmd(
    shape: o.ShapeRequired,
    out_dir: o.OutRequired,
    plan: o.Plan = None,
    elastic: o.Elastic = None,
    base_model: o.BaseModel = None,
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """Write one shape as a standard Hugging Face checkpoint: of a plan (stage-1 weights), or of an elastic
    checkpoint with the shape's SMOL mix merged into its weights."""
    from edgekit.elastic.source import Source

    start = time.perf_counter()
    if (plan is None) == (elastic is None):
        raise UsageError("give one of --plan (stage-1 shape) or --elastic (fine-tuned shape)")
    source = Source.resolve(elastic, plan, base_model=base_model)
    s = source.shape(shape)
    o.refuse_existing(out_dir, force)
    info = source.extract(s, out_dir, force=force)
    seconds = time.perf_counter() - start
    if json_out:
        print_json({**asdict(info), "path": str(out_dir), "seconds": round(seconds, 3)})
        return
    out.print(
        f"{info.shape}: {len(info.layers)} layers, FFN {info.intermediate_size}, {info.num_heads} heads "
        f"({info.num_kv_heads} KV), {info.parameters / 1e6:.1f} M parameters "
        f"({info.non_embedding_parameters / 1e6:.1f} M non-embedding) -> {out_dir} in {seconds:.2f} s"
    )

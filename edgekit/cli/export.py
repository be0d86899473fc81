"""`edgekit export`: over edgekit.export."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.artifacts import work_dir
from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Subnets in formats other tools load: GGUF for llama.cpp and ollama.")


@app.command("gguf")
def gguf_cmd(
    out_file: o.OutRequired,
    elastic: o.Elastic = None,
    plan: o.Plan = None,
    shape: o.Shape = None,
    precision: o.Precision = None,
    force: o.Force = False,
    json_out: o.Json = False,
) -> None:
    """Write one shape (SMOL merged) as a GGUF file (--precision f32, f16, q8_0 (the default), q4_0, q4_1, or with
    llama-cpp-python q4_k_m), and an ollama Modelfile beside it (`ollama create NAME -f Modelfile`). Without
    --elastic or --plan: the default model's shipped checkpoint; without --shape: full."""
    from transformers import AutoTokenizer

    from edgekit.elastic.source import Source
    from edgekit.engines.llamacpp import LlamaCppEngine
    from edgekit.export.gguf import PRECISIONS
    from edgekit.export.modelfile import write_modelfile

    precision = precision or "q8_0"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision}")
    if out_file.suffix != ".gguf":
        raise UsageError(f"--out names the GGUF file to write (FILE.gguf), not {out_file}")
    if out_file.exists() and not force:
        raise UsageError(f"{out_file} exists; pass --force to replace it")
    if not out_file.parent.is_dir():
        raise UsageError(f"no folder {out_file.parent} to write {out_file.name} into")
    source = Source.resolve(elastic, plan)
    the_shape = source.shape(shape) if shape else source.plan.full
    with work_dir(out_file.parent, out_file.stem) as tmp:
        hf, built = tmp / "hf", tmp / "gguf"
        with err.status(f"extracting {the_shape.name}"):
            source.extract(the_shape, hf)
        built.mkdir()
        with err.status(f"writing GGUF ({precision})"):
            record = LlamaCppEngine().compile(hf, built, precision, "cpu")
        (built / "model.gguf").replace(out_file)
        template = AutoTokenizer.from_pretrained(hf).chat_template
    try:
        modelfile: Path | None = write_modelfile(out_file.parent, out_file.name, template)
    except UsageError as exc:  # the GGUF stands on its own; only ollama's template is missing
        modelfile = None
        err.print(f"no Modelfile: {exc}")
    size = out_file.stat().st_size
    result = {"path": str(out_file), "modelfile": str(modelfile) if modelfile else None, "shape": the_shape.name,
              "source": source.label, "bytes": size, **record}  # fmt: skip
    if json_out:
        print_json(result)
        return
    out.print(f"wrote {out_file} ({the_shape.name} of {source.label}, {precision}, {size / 1e6:.1f} MB)")
    if modelfile:
        out.print(f"and {modelfile}; ollama: cd {out_file.parent} && ollama create {the_shape.name} -f Modelfile")

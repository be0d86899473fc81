"""`edgekit profile`: over edgekit.deployment.profile."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError


def profile_cmd(
    target: o.Target = "host",
    runtime: o.Runtime = None,
    precision: o.Precision = None,
    plan: o.Plan = None,
    elastic: o.Elastic = None,
    shapes: o.Shapes = None,
    fit_on: Annotated[
        str | None, typer.Option("--fit-on", help="Shapes to fit the predictor on (default: corners + middle).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Measure only the shapes the predictor is fitted on.")] = False,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per figure (after warm-up).")] = 5,
    new_tokens: Annotated[int, typer.Option("--new-tokens", min=2, help="Tokens per timed decode run.")] = 64,
    prompt_lens: Annotated[
        str, typer.Option("--prompt-lens", help="Prompt lengths to time prefill and first token at.")
    ] = "16,64,256",
    option: o.BuildOption = None,
    search_options: Annotated[
        bool,
        typer.Option(
            "--search-options",
            help="First find the build options fastest here at equal quality "
            "(each built, scored and timed); the LUT records them and deploy builds with them.",
        ),
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            help="With --search-options: the most perplexity an option may cost "
            "against the default build (0.02 = 2 %).",
        ),
    ] = 0.02,
    search_rounds: Annotated[
        int, typer.Option("--search-rounds", min=1, help="With --search-options: interleaved timing rounds.")
    ] = 3,
    drafts: Annotated[
        str | None,
        typer.Option(
            "--drafts",
            help="Also measure self-speculative decoding: the full model alone and with each of these smaller "
            "shapes drafting (comma-separated), on the checkpoint's chat prompts; deploy --draft auto picks from it.",
        ),
    ] = None,
    ks: Annotated[str, typer.Option("--ks", help="With --drafts: tokens drafted per verifier pass to try.")] = "2,4",
    estimate: Annotated[
        bool, typer.Option("--estimate", help="Write an estimated LUT for a target that cannot be measured here.")
    ] = False,
    out_dir: o.Out = None,
    json_out: o.Json = False,
) -> None:
    """Measure decode, prefill, first-token latency and memory of a plan's shapes in a real runtime; fit and
    validate a predictor; write the LUT that `deploy` uses (default: into $EDGEKIT_HOME/luts)."""
    from edgekit.deployment.lut import save_lut
    from edgekit.deployment.measure import MeasureSettings
    from edgekit.deployment.profile import host_request, profile
    from edgekit.deployment.resolve import lut_for, resolve_target
    from edgekit.elastic.source import Source
    from edgekit.progress import bar

    res = resolve_target(target, runtime, precision)
    source = Source.resolve(elastic, plan)
    the_plan = source.plan
    for note in res.notes:
        err.print(f"[dim]{note}[/dim]")
    if estimate:
        if res.is_host:
            raise UsageError("this machine can be measured: drop --estimate")
        lut, _ = lut_for(res, the_plan.model.name)
        report(lut, save_lut(lut, out_dir), json_out)
        return
    if not res.is_host:
        raise UsageError(
            f"this machine is not a {res.target_name}: run `edgekit profile --target host` on the device, "
            f"or pass --estimate for a LUT scaled from published specs"
        )
    try:
        lens = tuple(int(x) for x in prompt_lens.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--prompt-lens takes comma-separated integers, not '{prompt_lens}'") from None
    settings = MeasureSettings(new_tokens=new_tokens, runs=runs, prompt_lens=lens)
    req = host_request(res, the_plan, shapes, fit_on, quick, settings, o.key_values(option, "--option"))
    if search_options:
        from edgekit.deployment.option_search import candidates

        candidates(res.runtime, res.precision, res.device)  # a runtime with nothing to search: refused before work
        req = dataclasses.replace(req, search=True, tolerance=tolerance, search_rounds=search_rounds)
    draft_shapes, k_values = draft_request(source, res, drafts, ks)
    with bar() as progress:
        task = progress.add_task("profiling", total=len(req.shapes))

        def on_shape(name: str) -> None:
            if name.startswith(("building", "scoring", "timing")):  # the option search's steps
                progress.update(task, description=f"option search: {name}")
                return
            progress.update(task, description=f"{name}: extract, compile ({res.runtime} {res.precision}), measure")

        def done(m: Any) -> None:
            progress.advance(task)
            if not err.is_terminal:
                err.print(f"{m.shape}: {m.decode_ms:.2f} ms/token, {m.peak_rss_mb:.0f} MB")

        lut = profile(the_plan, req, on_shape, done)
        if draft_shapes:
            from edgekit.artifacts import work_dir
            from edgekit.deployment.lut import user_dir
            from edgekit.deployment.speculation import profile_drafts

            def on_step(label: str) -> None:
                progress.update(task, description=label)

            with work_dir(user_dir(), "profile") as tmp:
                lut.provenance["speculation"] = profile_drafts(source, res.runtime, res.precision, res.device,
                                                               draft_shapes, k_values, lut.provenance.get("options"),
                                                               Path(tmp), on_step)  # fmt: skip
    report(lut, save_lut(lut, out_dir), json_out)


def draft_request(source: Any, res: Any, drafts: str | None, ks: str) -> tuple[list[Any], list[int]]:
    """The drafts and k's profile --drafts measures, refused before any work when they cannot run."""
    from edgekit.deployment.speculation import check_request

    if drafts is None:
        return [], []
    try:
        k_values = sorted({int(x) for x in ks.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--ks takes comma-separated integers, not '{ks}'") from None
    from edgekit.speculative.session import MAX_K

    if not k_values:
        raise UsageError("--ks names no k")
    if not all(1 <= k <= MAX_K for k in k_values):
        raise UsageError(f"--ks takes k from 1 to {MAX_K}, not '{ks}'")
    names = [d.strip() for d in drafts.split(",") if d.strip()]
    if not names:
        raise UsageError("--drafts names no shape")
    shapes = [check_request(res.runtime, True, source, name, k) for name in names for k in k_values]
    return list(dict.fromkeys(shapes)), k_values


def report(lut: Any, path: Path, json_out: bool) -> None:
    if json_out:
        print_json({"path": str(path), **lut.to_dict()})
        return
    from edgekit.shapes import parse_shape

    title = f"{lut.target} · {lut.runtime} {lut.precision} {lut.device} · {lut.model['name']} · {lut.status.upper()}"
    table = Table(title=title)
    for col in ("shape", "decode ms/token", "spread", "first token", "peak MB", "predicted ms"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    coupled = [lut.geometry.coupled(d, w).name for d in (30, 24, 20, 15) for w in (100, 61)]
    shapes = [m.shape for m in lut.measured] or coupled
    for name in shapes:
        m = lut.measured_for(parse_shape(name, lut.geometry))
        p = lut.predict(parse_shape(name, lut.geometry))
        if m:
            n = max(m.ttft_ms) if m.ttft_ms else None
            ttft = f"{m.ttft_ms[n]:.0f} ms @{n}" if n else "-"
            table.add_row(name, f"{m.decode_ms:.2f}", f"{m.decode_spread_pct:.1f}%", ttft, f"{m.peak_rss_mb:.0f}",
                          f"{p.decode_ms:.2f}")  # fmt: skip
        else:
            table.add_row(name, "-", "-", f"{p.ttft_ms:.0f} ms @{p.prompt_len} (est.)", f"{p.memory_mb:.0f} (est.)",
                          f"{p.decode_ms:.2f}")  # fmt: skip
    out.print(table)
    if search := lut.provenance.get("option_search"):
        print_search(search)
    if spec := lut.provenance.get("speculation"):
        print_speculation(spec)
    v = lut.validation
    if v:
        d = v["decode"]
        out.print(
            f"predictor fitted on {len(v['fitted_on'])} shapes, tested on {d['n']} others: decode error median "
            f"{d['median_pct']:.1f}%, max {d['max_pct']:.1f}%, RMSE {d['rmse']:.3f} ms, {d['within_10_pct']:.0f}% "
            f"within ±10%; first token median {v['ttft']['median_pct']:.1f}%, memory median "
            f"{v['memory']['median_pct']:.1f}%"
        )
    if lut.status != "measured":
        out.print(f"[yellow]estimated[/yellow]: {lut.provenance.get('why')}; {lut.provenance.get('how_to_measure')}")
    out.print(f"LUT: {path}")


def print_search(search: dict[str, Any]) -> None:
    text = search["text"]
    table = Table(title=f"build options for {search['runtime']} {search['precision']} on this host ({search['shape']}, "
                  f"{search['rounds']} interleaved rounds; quality on {text['tokens']} held-out tokens)")  # fmt: skip
    for col in ("options", "decode ms/token", "speed-up", "ppl", "vs default", "within"):
        table.add_column(col, justify="left" if col == "options" else "right")
    base = search["trials"][0]["decode_ms"]
    for t in search["trials"]:
        label = ",".join(f"{k}={v}" for k, v in t["options"].items())
        mark = " (chosen)" if t["options"] == search["winner"] else ""
        table.add_row(label + mark, f"{t['decode_ms']:.2f}", f"{base / t['decode_ms']:.2f}x", f"{t['ppl']:.3f}",
                      f"{t['quality_ratio']:.3f}x", "yes" if t["within"] else "no")  # fmt: skip
    out.print(table)
    out.print(f"chosen: {search['winner']} ({search['speedup']:.2f}x the default build's speed, quality within "
              f"{100 * search['tolerance']:.0f} %)")  # fmt: skip


def print_speculation(spec: dict[str, Any]) -> None:
    table = Table(title=f"self-speculative decoding: {spec['verifier']} verifying ({spec['prompts']} chat prompts x "
                  f"{spec['rounds']} rounds, {spec['new_tokens']} tokens, greedy; {spec['weights']})")  # fmt: skip
    for col in ("draft", "k", "ms/token", "alone", "speed-up", "kept", "tokens/pass", "same replies"):
        table.add_column(col, justify="left" if col == "draft" else "right")
    for r in spec["rows"]:
        name = r["draft"] + (" (own build)" if r.get("weights") == "own" else "")
        table.add_row(name, str(r["k"]), f"{r['speculative_ms']:.2f}", f"{r['alone_ms']:.2f}",
                      f"{r['speedup']:.2f}x", f"{r['acceptance']:.0%}", f"{r['tokens_per_pass']:.2f}",
                      "yes" if r["identical"] else "no")  # fmt: skip
    out.print(table)

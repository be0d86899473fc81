"""`edgekit profile`, `edgekit deploy` and `edgekit targets`: thin layers over edgekit.deployment.profile/deploy/lut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgekit.cli.console import err, out, print_json
from edgekit.cli.options import key_values
from edgekit.errors import UsageError


def profile_cmd(
    target: str = typer.Option("host", "--target", "-t", help="host (this machine) or a target name to estimate."),
    runtime: str = typer.Option(None, "--runtime", "-r", help="ort, tvm, torch, mlc (default: first installed)."),
    precision: str = typer.Option(None, "--precision", help="int4, fp16, fp32, ... (default: the target's)."),
    plan: str = typer.Option(None, "--plan", help="Plan folder or shipped plan (default: the default model's)."),
    elastic: str = typer.Option(None, "--elastic", help="Elastic checkpoint: profile the shapes of its plan."),
    shapes: str = typer.Option(None, "--shapes", help="Shapes to measure (default: the plan's grid)."),
    fit_on: str = typer.Option(None, "--fit-on", help="Shapes to fit the predictor on (default: corners + middle)."),
    quick: bool = typer.Option(False, "--quick", help="Measure only the shapes the predictor is fitted on."),
    runs: int = typer.Option(5, "--runs", min=1, help="Timed runs per figure (after warm-up)."),
    new_tokens: int = typer.Option(64, "--new-tokens", min=2, help="Tokens per timed decode run."),
    prompt_lens: str = typer.Option("16,64,256", "--prompt-lens", help="Prompt lengths for prefill/first token."),
    option: list[str] = typer.Option(None, "--option", help="Runtime build option key=value (repeatable)."),
    estimate: bool = typer.Option(False, "--estimate", help="Write an estimated LUT for a target not measurable here."),
    out_dir: Path = typer.Option(None, "--out", help="Folder for the LUT (default: $EDGEKIT_HOME/luts)."),
    json_out: bool = typer.Option(False, "--json", help="Print the LUT as JSON."),
) -> None:
    """Measure decode, prefill, first-token latency and memory of a plan's shapes in a real runtime; fit and
    validate a predictor; write the LUT that `deploy` uses."""
    from edgekit.deployment.latency import fit_subset
    from edgekit.deployment.lut import save_lut
    from edgekit.deployment.measure import MeasureSettings
    from edgekit.deployment.pipeline import lut_for, resolve_source, resolve_target
    from edgekit.deployment.profile import ProfileRequest, profile
    from edgekit.progress import bar

    res = resolve_target(target, runtime, precision)
    the_plan = resolve_source(elastic, plan).plan
    for note in res.notes:
        err.print(f"[dim]{note}[/dim]")
    if estimate:
        if res.is_host:
            raise UsageError("this machine can be measured: drop --estimate")
        lut, note = lut_for(res, the_plan.model.name)
        path = save_lut(lut, out_dir)
        _report(lut, path, json_out)
        return
    if not res.is_host:
        raise UsageError(
            f"this machine is not a {res.target_name}: run `edgekit profile --target host` on the device, "
            f"or pass --estimate for a LUT scaled from published specs"
        )
    grid = the_plan.grid(shapes) if shapes else the_plan.grid()
    fit = the_plan.grid(fit_on) if fit_on else fit_subset(grid)
    missing = [s.name for s in fit if s not in grid]
    if missing:
        raise UsageError(f"--fit-on shapes {', '.join(missing)} are not among the measured shapes")
    try:
        lens = tuple(int(x) for x in prompt_lens.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--prompt-lens takes comma-separated integers, not '{prompt_lens}'") from None
    req = ProfileRequest(
        res.target_name, res.runtime, res.precision, res.device, fit if quick else grid, fit,
        MeasureSettings(new_tokens=new_tokens, runs=runs, prompt_lens=lens), key_values(option, "--option"),
    )  # fmt: skip
    with bar() as progress:
        task = progress.add_task("profiling", total=len(req.shapes))

        def on_shape(name: str) -> None:
            progress.update(task, description=f"{name}: extract, compile ({res.runtime} {res.precision}), measure")

        def done(m: Any) -> None:
            progress.advance(task)
            if not err.is_terminal:
                err.print(f"{m.shape}: {m.decode_ms:.2f} ms/token, {m.peak_rss_mb:.0f} MB")

        lut = profile(the_plan, req, on_shape, done)
    path = save_lut(lut, out_dir)
    _report(lut, path, json_out)


def _report(lut: Any, path: Path, json_out: bool) -> None:
    if json_out:
        print_json({"path": str(path), **lut.to_dict()})
        return
    from edgekit.shapes import parse_shape

    title = f"{lut.target} · {lut.runtime} {lut.precision} {lut.device} · {lut.model['name']} · {lut.status.upper()}"
    table = Table(title=title)
    for col in ("shape", "decode ms/token", "spread", "first token", "peak MB", "predicted ms"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    shapes = [m.shape for m in lut.measured] or [f"d{d}-w{w}" for d in (30, 24, 20, 15) for w in (100, 61)]
    for name in shapes:
        m = lut.measured_for(parse_shape(name))
        p = lut.predict(parse_shape(name))
        if m:
            n = max(m.ttft_ms) if m.ttft_ms else None
            ttft = f"{m.ttft_ms[n]:.0f} ms @{n}" if n else "-"
            table.add_row(name, f"{m.decode_ms:.2f}", f"{m.decode_spread_pct:.1f}%", ttft, f"{m.peak_rss_mb:.0f}",
                          f"{p.decode_ms:.2f}")  # fmt: skip
        else:
            table.add_row(name, "-", "-", f"{p.ttft_ms:.0f} ms @{p.prompt_len} (est.)", f"{p.memory_mb:.0f} (est.)",
                          f"{p.decode_ms:.2f}")  # fmt: skip
    out.print(table)
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


def deploy_cmd(
    target: str = typer.Option(..., "--target", "-t", help="Target name or alias (orin, rtx-4090, host, ...)."),
    budget: str = typer.Option(..., "--budget", "-b", help="40ms, 25tok/s, ttft<300ms, mem<2GB, 60%, or a mix."),
    runtime: str = typer.Option(None, "--runtime", "-r", help="ort, tvm, torch, mlc (default: first installed)."),
    precision: str = typer.Option(None, "--precision", help="int4, fp16, fp32, ... (default: the target's)."),
    elastic: str = typer.Option(None, "--elastic", help="Elastic checkpoint (default: the model's shipped one)."),
    plan: str = typer.Option(None, "--plan", help="Deploy from a plan instead (stage-1 weights, no fine-tuning)."),
    model: str = typer.Option(None, "--model", "-m", help="Base model whose shipped checkpoint or plan to use."),
    out_dir: Path = typer.Option(None, "--out", help="Deployment folder (default: $EDGEKIT_HOME/deployments/...)."),
    prompt_len: int = typer.Option(128, "--prompt-len", min=1, help="Prompt tokens the first-token budget is for."),
    gen_len: int = typer.Option(128, "--gen-len", min=1, help="Tokens a reply is expected to have."),
    metric: str = typer.Option("ppl", "--metric", help="Accuracy column to rank by: ppl, domain_ppl, acc_norm."),
    dev_text: Path = typer.Option(None, "--dev-text", help="Without an accuracy table: rank by ppl on this text."),
    verify: bool = typer.Option(None, "--verify/--no-verify", help="Measure the result (default: on this host)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    option: list[str] = typer.Option(None, "--option", help="Runtime build option key=value (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Choose the shape and print what would run; write nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the deployment manifest as JSON."),
) -> None:
    """Pick the most accurate shape whose predicted latency and memory fit the budget on the target, cut it
    (SMOL merged), compile it for the target's runtime, verify it on this host, write a deployment folder."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.deployment.ranking import LOWER_IS_BETTER
    from edgekit.progress import steps

    if metric not in LOWER_IS_BETTER:
        raise UsageError(f"--metric must be one of {', '.join(LOWER_IS_BETTER)}, not '{metric}'")
    req = DeployRequest(
        target=target, budget=parse_budget(budget), runtime=runtime, precision=precision, elastic=elastic, plan=plan,
        model=model, out=out_dir, prompt_len=prompt_len, gen_len=gen_len, metric=metric, dev_text=dev_text,
        verify=verify, force=force, options=key_values(option, "--option"), dry_run=dry_run,
    )  # fmt: skip
    with steps() as step:
        dep = deploy(req, step)
    if json_out:
        print_json({"path": str(dep.path), "notes": dep.notes, **dep.manifest})
        return
    _print_candidates(dep)
    if dry_run:
        out.print(f"dry run: would cut {dep.shape} and run:")
        for line in dep.manifest["steps"]:
            out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        return
    _print_result(dep)


def _print_candidates(dep: Any) -> None:
    m = dep.manifest
    est = "" if m["lut"]["status"] == "measured" else " (est.)"
    table = Table(title=f"candidates on {m['target']['title']} · {m['runtime']['name']} {m['runtime']['precision']}")
    metric = m["accuracy"]["metric"]
    for col in ("shape", "params", f"ms/token{est}", f"first token{est}", f"memory{est}", metric, "fits"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for c in dep.candidates:
        mark = "[bold green]← chosen[/]" if c.shape == dep.shape else ("yes" if c.fits else f"[dim]no: {c.why_not}[/]")
        score = f"{c.score / 1e6:.1f} M" if metric == "params" else f"{c.score:.3g}"
        table.add_row(c.shape, f"{c.params / 1e6:.1f} M", f"{c.decode_ms:.2f}", f"{c.ttft_ms:.0f} ms",
                      f"{c.memory_mb:.0f} MB", score, mark)  # fmt: skip
    out.print(table)
    for note in dep.notes:
        out.print(f"[dim]· {note}[/dim]")
    pred = m["predicted"]
    line = f"chose {dep.shape}: the best {metric} among shapes predicted to fit {m['budget']['text']}"
    out.print(line + f" (predicted {pred['decode_ms']:.2f} ms/token{est})")


def _print_result(dep: Any) -> None:
    m = dep.manifest
    if m["measured"]:
        meas = m["measured"]
        out.print(
            f"measured here: {meas['decode_ms']:.2f} ms/token (spread {meas['decode_spread_pct']:.1f}%), "
            f"peak {meas['peak_rss_mb']:.0f} MB"
        )
    t = m["timings"]
    out.print(f"extract {t['extract_s']:.1f} s, compile {t['compile_s']:.1f} s, verify {t['verify_s']:.1f} s")
    out.print(f"deployment: {dep.path}\nchat: edgekit chat {dep.path}")


def targets_cmd(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Known targets with their specs, runtimes and the LUTs available for them."""
    from edgekit.deployment.lut import all_luts
    from edgekit.deployment.targets import load_targets

    luts = all_luts()
    rows = []
    for t in load_targets():
        have = [f"{lut.runtime}-{lut.precision} {lut.model['name']} ({lut.status})" for _, lut, _ in luts
                if lut.target == t.name]  # fmt: skip
        rows.append({
            "name": t.name, "aliases": t.aliases, "title": t.title, "kind": t.kind,
            "bandwidth_gbs": t.memory.get("bandwidth_gbs"), "memory_gb": t.memory.get("size_gb"),
            "runtimes": [f"{r['runtime']} {r.get('precision', '')}".strip() for r in t.runtimes], "luts": have,
        })  # fmt: skip
    hosts = sorted({lut.target for _, lut, _ in luts if lut.target.startswith("host-")})
    for h in hosts:
        have = [f"{lut.runtime}-{lut.precision} {lut.model['name']} ({lut.status})" for _, lut, _ in luts
                if lut.target == h]  # fmt: skip
        machine = next(lut.provenance.get("machine", {}) for _, lut, _ in luts if lut.target == h)
        rows.append({"name": h, "aliases": [], "title": f"measured machine: {machine.get('cpu', '?')}",
                     "kind": machine.get("kind", "?"), "bandwidth_gbs": None, "memory_gb": machine.get("memory_gb"),
                     "runtimes": [], "luts": have})  # fmt: skip
    if json_out:
        print_json(rows)
        return
    table = Table(title="targets")
    for col in ("name", "aliases", "title", "bandwidth", "runtimes", "LUTs"):
        table.add_column(col)
    for r in rows:
        bw = f"{r['bandwidth_gbs']:g} GB/s" if r["bandwidth_gbs"] else "-"
        table.add_row(r["name"], ", ".join(r["aliases"]), r["title"], bw, ", ".join(r["runtimes"]),
                      "\n".join(r["luts"]) or "-")  # fmt: skip
    out.print(table)

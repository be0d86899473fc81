"""`edgekit deploy`: over edgekit.deployment.pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli import options as o
from edgekit.cli.console import out, print_json
from edgekit.deployment.choose import FLOOR
from edgekit.errors import UsageError


def deploy_cmd(
    target: o.Target,
    budget: Annotated[
        str,
        typer.Option(
            "--budget", "-b", help="What the deployment must fit: 40ms, 25tok/s, ttft<300ms, mem<2GB, 60%, or a mix."
        ),
    ],
    runtime: o.Runtime = None,
    precision: o.Precision = None,
    elastic: o.Elastic = None,
    plan: o.Plan = None,
    out_dir: o.Out = None,
    prompt_len: Annotated[
        int, typer.Option("--prompt-len", min=1, help="Prompt tokens the first-token budget is for.")
    ] = 128,
    gen_len: Annotated[int, typer.Option("--gen-len", min=1, help="Tokens a reply is expected to have.")] = 128,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="What to rank shapes by: auto (chat_ppl where the checkpoint predicts it, else ppl), chat_ppl, "
            "ppl, domain_ppl, acc, acc_norm, answer_rate or agreement.",
        ),
    ] = "auto",
    floor: Annotated[
        str,
        typer.Option(
            "--floor",
            help="Refuse a shape more than this many times worse than the full model on the metric (perplexity "
            "ratio; accuracy inverted).",
        ),
    ] = f"{FLOOR:g}",
    allow_degraded: Annotated[
        bool, typer.Option("--allow-degraded", help="Ship a shape below the quality floor, with a warning.")
    ] = False,
    dev_text: o.DevText = None,
    verify: Annotated[
        bool | None,
        typer.Option("--verify/--no-verify", help="Measure the result (default: when the target is this machine)."),
    ] = None,
    force: o.Force = False,
    option: o.BuildOption = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="Deploy the router's menu of shapes and route each reply to one, the mean latency on the budget.",
        ),
    ] = False,
    router: Annotated[
        Path | None,
        typer.Option("--router", help="The router for --adaptive (default: the checkpoint's fitted one)."),
    ] = None,
    draft: o.Draft = None,
    draft_k: o.DraftK = 4,
    dry_run: o.DryRun = False,
    json_out: o.Json = False,
) -> None:
    """Pick the most accurate shape whose predicted latency and memory fit the budget on the target, cut it
    (SMOL merged), compile it for the target's runtime, verify it on this host, write a deployment folder
    (default: $EDGEKIT_HOME/deployments/TARGET-RUNTIME-PRECISION-SHAPE). Without --elastic or --plan: the
    default model's shipped elastic checkpoint."""
    from edgekit.deployment.adaptive import deploy_adaptive
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.pipeline import DeployRequest, deploy
    from edgekit.deployment.pipeline import dry_run as plan_deploy
    from edgekit.elastic.ranking import LOWER_IS_BETTER
    from edgekit.progress import steps

    try:
        floor_ratio = float(floor)
    except ValueError:
        floor_ratio = float("nan")
    if not floor_ratio >= 1.0 or floor_ratio == float("inf"):
        raise UsageError(f"--floor must be a number of at least 1 (times the full model's metric), not '{floor}'")
    if metric != "auto" and metric not in LOWER_IS_BETTER:
        raise UsageError(f"--metric must be auto or one of {', '.join(LOWER_IS_BETTER)}, not '{metric}'")
    req = DeployRequest(
        target=target, budget=parse_budget(budget), runtime=runtime, precision=precision, elastic=elastic, plan=plan,
        out=out_dir, prompt_len=prompt_len, gen_len=gen_len, metric=metric, dev_text=dev_text, verify=verify,
        force=force, options=o.key_values(option, "--option"), floor=floor_ratio, allow_degraded=allow_degraded,
        draft=draft, k=draft_k,
    )  # fmt: skip
    if router is not None and not adaptive:
        raise UsageError("--router is for --adaptive deployments")
    if draft is not None and adaptive:
        raise UsageError("--draft is for a single-shape deployment, not --adaptive")
    if draft is None and draft_k != 4:
        raise UsageError("--draft-k is the number of tokens a --draft drafts: pass --draft too")
    if adaptive and dry_run:
        raise UsageError("--adaptive builds and measures every menu shape; it has no --dry-run")
    with steps() as step:
        if adaptive:
            result = deploy_adaptive(req, router_folder(req, router), step)
        else:
            result = plan_deploy(req, step) if dry_run else deploy(req, step)
    if json_out:
        data = result.to_dict() if dry_run else result.manifest.to_dict()
        print_json({"path": str(result.out if dry_run else result.path), "notes": result.notes, **data})
        return
    show(result)


def router_folder(req: Any, given: Path | None) -> Path:
    """The router an adaptive deploy uses: --router, else the one fitted for the source in $EDGEKIT_HOME."""
    from edgekit.elastic.source import Source
    from edgekit.routing import default_dir
    from edgekit.routing.router import ROUTER_FILE

    if given is not None:
        if not (given / ROUTER_FILE).is_file():
            fit = f"edgekit elastic router --prompts FILE --out {given}"
            raise UsageError(f"no router at {given}: fit one with `{fit}`")
        return given
    source = Source.resolve(req.elastic, req.plan, req.model)
    folder = default_dir(source)
    if not (folder / ROUTER_FILE).is_file():
        raise UsageError(f"no router for {source.name}: fit one with `edgekit elastic router --prompts FILE` "
                         "(or name one with --router)")  # fmt: skip
    return folder


def show(result: Any) -> None:
    """The candidates and the choice; then what a dry run would run, or what the deployment measured."""
    from edgekit.deployment.pipeline import DryRun

    if isinstance(result, DryRun):
        print_candidates(result.candidates, result.shape, result.notes, result)
        out.print(f"dry run: would cut {result.shape} and run:")
        for line in result.steps:
            out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        return
    m = result.manifest
    print_candidates(result.candidates, result.shape, result.notes, m)
    if m.measured:
        out.print(f"measured here: {m.measured.decode_ms:.2f} ms/token (spread {m.measured.decode_spread_pct:.1f}%), "
                  f"peak {m.measured.peak_rss_mb:.0f} MB")  # fmt: skip
    for up in m.stepped_up:
        outcome = "kept" if up["kept"] else f"dropped: {up['why']}"
        measured = f"{up['measured_decode_ms']:.2f}" if up["measured_decode_ms"] is not None else "-"
        out.print(f"stepped up {up['from']} → {up['shape']}: {measured} ms/token measured ({outcome})")
    if m.adaptive:
        a = m.adaptive
        table = Table(title=f"routed per reply: mean {a['calibration']['mean_ms']:.3g} ms/token on the router's "
                            f"{a['calibration']['prompts']} prompts, budget {a['budget_ms']:.3g}")  # fmt: skip
        for col in ("shape", "ms/token", "share of prompts", "MB"):
            table.add_column(col, justify="left" if col == "shape" else "right")
        for e in a["menu"]:
            mb = f"{e['mb']:.0f}" if e["mb"] else "-"
            table.add_row(e["shape"], f"{e['decode_ms']:.2f}", f"{e['share']:.0%}", mb)
        out.print(table)
        out.print(f"all of it (the shapes used and the router) takes {a['memory_mb']:.0f} MB on disk")
    t = m.timings
    out.print(f"extract {t['extract_s']:.1f} s, compile {t['compile_s']:.1f} s, verify {t['verify_s']:.1f} s")
    out.print(f"deployment: {result.path}\nchat: edgekit chat {result.path}")


FULL_TABLE = 24  # up to this many candidates are all shown; more (a whole space), only the frontier
FRONTIER_ROWS = 15  # of a long frontier: the choice, its neighbours, and shapes spread along the rest
NEIGHBOURS = 3


def shown_rows(rows: list[Any], chosen: str) -> list[Any]:
    """Every candidate of a small grid; of a whole space, the Pareto frontier (slowest first) and the chosen
    shape: all of a short frontier, else the choice with its neighbours and shapes spread along the rest."""
    if len(rows) <= FULL_TABLE:
        return rows
    front = sorted((c for c in rows if c.frontier or c.shape == chosen), key=lambda c: -c.decode_ms)
    if len(front) <= FRONTIER_ROWS:
        return front
    at = next(i for i, c in enumerate(front) if c.shape == chosen)
    keep = set(range(max(0, at - NEIGHBOURS), min(len(front), at + NEIGHBOURS + 1)))
    spare = FRONTIER_ROWS - len(keep)
    keep |= {round(i * (len(front) - 1) / (spare - 1)) for i in range(spare)} if spare > 1 else {0}
    return [front[i] for i in sorted(keep)]


def print_candidates(rows: list[Any], chosen: str, notes: list[str], record: Any) -> None:
    """The candidates table and why `chosen` won; `record` is the deployment's manifest or the dry run."""
    runtime, lut_status, metric = record.runtime, record.lut.status, record.accuracy.metric
    est = "" if lut_status == "measured" else " (est.)"
    shown = shown_rows(rows, chosen)
    title = f"candidates on {record.target.title} · {runtime.name} {runtime.precision}"
    if len(shown) < len(rows):
        on_front = sum(c.frontier for c in rows)
        title += (f": {len(shown)} of the {on_front} shapes on the latency-accuracy frontier of {len(rows):,} "
                  "searched (all in --json)")  # fmt: skip
    table = Table(title=title)
    for col in ("shape", "params", f"ms/token{est}", f"first token{est}", f"memory{est}", metric, "fits"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for c in shown:
        mark = "[bold green]← chosen[/]" if c.shape == chosen else ("yes" if c.fits else f"[dim]no: {c.why_not}[/]")
        score = f"{c.score / 1e6:.1f} M" if metric == "params" else f"{c.score:.3g}"
        table.add_row(c.shape, f"{c.params / 1e6:.1f} M", f"{c.decode_ms:.2f}", f"{c.ttft_ms:.0f} ms",
                      f"{c.memory_mb:.0f} MB", score, mark)  # fmt: skip
    out.print(table)
    for note in notes:
        out.print(f"[dim]· {note}[/dim]")
    search = getattr(record, "search", None) or {}
    if search:
        whole = " (the plan's whole space)" if search.get("shapes") == search.get("space") else ""
        out.print(f"[dim]· searched {search['shapes']:,} shapes{whole} in {search['seconds'] * 1000:.0f} ms; "
                  f"{search['frontier']} on the latency-accuracy frontier[/dim]")  # fmt: skip
    how = "predicted to fit"
    if any(up["kept"] for up in getattr(record, "stepped_up", [])):
        how = "measured to fit here, stepping up from the prediction"
    out.print(
        f"chose {chosen}: the best {metric} among shapes {how} {record.budget.text} "
        f"(predicted {record.predicted.decode_ms:.2f} ms/token{est})"
    )
    acc = record.accuracy
    if acc.ratio is not None:
        flag = " [bold yellow]below it: degraded[/]" if acc.degraded else ""
        held = getattr(acc, "floor_on", None)
        if held:  # the floor is held on another metric than the ranking's: say both
            metric_, x = next(iter(held.items()))
            out.print(f"expected at {acc.ratio:.2f}x the full model's {metric} and {x:.2f}x its {metric_} (quality "
                      f"floor {acc.floor:g}x, on {metric_}){flag}")  # fmt: skip
        else:
            out.print(f"expected at {acc.ratio:.2f}x the full model's {metric} (quality floor {acc.floor:g}x){flag}")
    art = getattr(acc, "artifact", None)
    if art:
        out.print(f"the {art['runtime']} artifact measured: {art['metric']} {art['value']:.3g} against "
                  f"{art['fp32']:.3g} for its fp32 weights ({art['ratio']:.2f}x, on {art['prompts']} reference "
                  "replies)")  # fmt: skip

"""`edgekit container build|flash`: over edgekit.container (build, images, flash)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from edgekit.cli import options as o
from edgekit.cli.console import err, out, print_json
from edgekit.errors import UsageError

app = typer.Typer(
    help="Jetson images of a deployment: build one for a board's L4T release, move it onto the board.",
    no_args_is_help=True,
)


@app.command("build")
def build_cmd(
    target: o.Target,
    deployment: o.DeploymentRequired,
    l4t: Annotated[
        str | None, typer.Option("--l4t", help="The board's L4T release, e.g. 36.4.3 (default: the target's).")
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Image name (default: edgekit/<model>-<shape>:<runtime>-r<l4t>).")
    ] = None,
    context_out: Annotated[
        Path | None, typer.Option("--context-out", help="Build context folder (default: under $EDGEKIT_HOME).")
    ] = None,
    base_image: Annotated[
        str | None, typer.Option("--base-image", help="Build on this image instead of the mapped one.")
    ] = None,
    build_arg: Annotated[
        list[str] | None, typer.Option("--build-arg", help="Override a Dockerfile.jetson ARG (KEY=VALUE, repeatable).")
    ] = None,
    wheel: Annotated[
        Path | None, typer.Option("--wheel", help="Install this edgekit wheel instead of building one.")
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="The image starts `edgekit serve` (the OpenAI API) instead of the chat.")
    ] = False,
    force: o.Force = False,
    dry_run: o.DryRun = False,
    json_out: o.Json = False,
) -> None:
    """Build an arm64 image of a deployment for a Jetson's L4T release: writes the build context (verified
    deployment copy, edgekit wheel, Dockerfile.jetson, hashes), then runs `docker buildx build --load`."""
    from edgekit.container.build import build_commands, check_commands, check_wheel, preflight_build, prepare_context
    from edgekit.container.images import resolve_l4t
    from edgekit.deployment.manifest import load_deployment
    from edgekit.deployment.targets import get_target

    tgt = get_target(target)
    if tgt.kind != "jetson":
        raise UsageError(f"container images are for Jetson boards; {tgt.name} is a {tgt.kind} target")
    release = resolve_l4t(tgt, l4t)
    # what the user gave is checked before what the host has: a wrong path is a usage error, not a missing docker
    load_deployment(deployment)
    if wheel is not None:
        check_wheel(wheel)
    checks = check_commands()
    found = [] if dry_run else preflight_build()
    plan = prepare_context(
        deployment, tgt, context_out, l4t=release, tag=tag, wheel=wheel, base_image=base_image,
        build_args=o.key_values(build_arg, "--build-arg"), force=force, serve=serve,
    )  # fmt: skip
    commands = build_commands(plan)
    report: dict[str, Any] = {
        **plan.to_dict(),
        "dry_run": dry_run,
        "checks": [c.to_dict() for c in checks],
        "found": found,
        "commands": [c.to_dict() for c in commands],
        "built": False,
    }
    if dry_run:
        _show(report, json_out)
        return
    if not json_out:
        _show(report, json_out=False)
    from edgekit.container.build import run_build

    run_build(plan)
    report["built"] = True
    if json_out:
        print_json(report)
        return
    out.print(
        f"built {plan.image}\nmove it onto the board: edgekit container flash --image {plan.image} --to USER@HOST",
        markup=False,
    )


@app.command("flash")
def flash_cmd(
    image: Annotated[str, typer.Option("--image", help="A local image from `edgekit container build`.")],
    to: Annotated[str, typer.Option("--to", help="The board: USER@HOST or USER@HOST:PORT (SSH, key authentication).")],
    run: Annotated[
        bool,
        typer.Option("--run", help="Start the image on the board once it is there: its chat, or its server (--serve)."),
    ] = False,
    dry_run: o.DryRun = False,
    json_out: o.Json = False,
) -> None:
    """Move an image onto a Jetson (`docker save | ssh docker load`) after checking the board: reachable,
    the same L4T release family as the image, enough free disk, docker with the nvidia runtime."""
    from edgekit.container.flash import check_commands, flash_commands, parse_ssh_target, preflight_flash, run_flash
    from edgekit.container.images import check_image_name

    dest = parse_ssh_target(to)
    check_image_name(image)
    checks, commands = check_commands(image, dest), flash_commands(image, dest, run)
    report: dict[str, Any] = {
        "image": image, "to": dest.dest, "port": dest.port, "dry_run": dry_run,
        "checks": [c.to_dict() for c in checks], "commands": [c.to_dict() for c in commands],
        "board": None, "loaded": False,
    }  # fmt: skip
    if dry_run:
        _show(report, json_out)
        return
    facts = preflight_flash(image, dest, run)
    report["board"] = facts.to_dict()
    if not json_out:
        out.print(
            f"{dest.host}: L4T {facts.l4t} (JetPack {facts.jetpack or '?'}), {(facts.free_bytes or 0) / 1024**3:.1f} "
            f"GB free on {facts.free_on}, docker runtimes {', '.join(facts.docker_runtimes) or '-'}"
        )
        for note in facts.notes:
            err.print(f"[yellow]note[/yellow]: {note}")
    if json_out and run and facts.serve_port is None:
        raise UsageError("--run starts an interactive chat: drop --json")
    run_flash(image, dest, run, facts.serve_port)
    report["loaded"] = True
    if facts.serve_port is not None:
        from edgekit.container.flash import server_url

        report["url"] = server_url(dest, facts.serve_port)
    if json_out:
        print_json(report)
    elif run and facts.serve_port is not None:
        out.print(f"edgekit serve runs on {dest.host}: {report['url']} (OpenAI-compatible; `edgekit chat --url "
                  f"{report['url']}`)", markup=False)  # fmt: skip
    elif not run:
        start = flash_commands(image, dest, run=True)[-1].text()
        out.print(f"{image} is on {dest.host}; chat there: {escape(start)} (or flash with --run)")


def _show(report: dict[str, Any], json_out: bool) -> None:
    """The plan and every command, one per line and unwrapped, so each can be copied and run by hand."""
    if json_out:
        print_json(report)
        return
    if "context" in report:
        out.print(f"image {report['image']} from {report['base']['image']} for {report['target']} "
                  f"(L4T {report['l4t']}, JetPack {report['jetpack'] or '?'}), {report['runtime']} "
                  f"{report['precision']}, {report['model']} {report['shape']}", markup=False)  # fmt: skip
        out.print(f"build context: {report['context']} (its files and hashes: context.json)", markup=False)
        for c in report.get("prepared_with", []):
            out.print(f"  {escape(c['run'])}    [dim]# {escape(c['why'])} (ran)[/dim]")
    for note in report.get("notes", []):
        out.print(f"[yellow]note[/yellow]: {escape(note)}")
    out.print("checks, in order (not run):" if report["dry_run"] else "checked:")
    for c in report["checks"]:
        out.print(f"  {escape(c['run'])}    [dim]# {escape(c['why'])}[/dim]")
    for line in report.get("found", []):
        out.print(f"  [dim]{escape(line)}[/dim]")
    out.print("would run:" if report["dry_run"] else "running:")
    for c in report["commands"]:
        out.print(f"  {escape(c['run'])}    [dim]# {escape(c['why'])}[/dim]")

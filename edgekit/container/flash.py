"""Moving an image onto a Jetson over SSH: `docker save IMAGE | ssh USER@HOST docker load`, optionally
followed by `docker run --runtime nvidia` there, after the checks that catch the usual failures first:
an unreachable board, an image for another L4T release, a full disk, docker unusable by that user.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.container.images import l4t_compatible
from edgekit.errors import ExternalToolError, MissingDependencyError, ResourceError, UsageError
from edgekit.hardware.host import jetpack_for_l4t, parse_l4t_release
from edgekit.shell import Command, Result

GiB = 1024**3
CONNECT_TIMEOUT_S = 5
# docker load holds the archive while it unpacks the layers: leave room for both plus slack
FREE_FACTOR = 1.5
SSH_OPTIONS = (
    "-o", "BatchMode=yes",  # never wait at a password prompt: edgekit runs unattended between steps
    "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
    "-o", "StrictHostKeyChecking=accept-new",  # a new board's key is learnt once; a changed key is refused
)  # fmt: skip
DOCKER_ROOT_DF = "df -Pk /var/lib/docker 2>/dev/null || df -Pk /"


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int | None = None

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh(self, *remote: str, tty: bool = False) -> tuple[str, ...]:
        argv = ["ssh", *SSH_OPTIONS]
        if self.port:
            argv += ["-p", str(self.port)]
        if tty:
            argv.append("-t")
        return (*argv, self.dest, *remote)


def parse_ssh_target(text: str) -> SshTarget:
    """'user@host' or 'user@host:port' (IPv6 in brackets: 'user@[fe80::1]:22')."""
    match = re.fullmatch(r"([A-Za-z0-9._-]+)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?", text.strip())
    if not match:
        raise UsageError(f"--to takes USER@HOST or USER@HOST:PORT (e.g. nvidia@orin.local), not '{text}'")
    port = int(match.group(3)) if match.group(3) else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--to: port {port} is out of range")
    return SshTarget(match.group(1), match.group(2).strip("[]"), port)


@dataclass
class BoardFacts:
    l4t: str | None = None
    jetpack: str | None = None
    free_bytes: int | None = None
    free_on: str | None = None  # the mount the docker data lives on
    docker_runtimes: list[str] = field(default_factory=list)
    image_size: int | None = None
    image_l4t: str | None = None
    serve_port: int | None = None  # the image starts `edgekit serve` on this port (built with --serve)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ pure parsers


def parse_df(text: str) -> tuple[int, str] | None:
    """`df -Pk PATH` (POSIX: one line per filesystem, sizes in 1024-byte blocks) -> (free bytes, mount)."""
    for line in reversed(text.strip().splitlines()):
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit():
            return int(fields[3]) * 1024, fields[5]
    return None


def parse_image_inspect(text: str) -> tuple[int, dict[str, str]]:
    """Our `docker image inspect --format '{{.Size}} {{json .Config.Labels}}'` -> (bytes, labels)."""
    size, _, labels = text.strip().partition(" ")
    try:
        parsed = json.loads(labels) if labels else None
        return int(size), parsed if isinstance(parsed, dict) else {}
    except (ValueError, json.JSONDecodeError):
        raise ExternalToolError(f"unexpected `docker image inspect` output: {text.strip()[:80]}") from None


# ------------------------------------------------------------------ commands


def image_inspect_command(image: str) -> Command:
    return Command(
        ("docker", "image", "inspect", "--format", "{{.Size}} {{json .Config.Labels}}", image),
        "the image is here; its size and the L4T release it was built for",
    )


def check_commands(image: str, to: SshTarget) -> list[Command]:
    """The checks before a transfer, in order, as the commands they run."""
    return [
        image_inspect_command(image),
        Command(to.ssh("true"), "the board answers over SSH with key authentication"),
        Command(to.ssh("cat", "/etc/nv_tegra_release"), "the board's L4T release"),
        Command(to.ssh(DOCKER_ROOT_DF), "free disk where the board keeps docker images"),
        Command(to.ssh("docker", "info", "--format", "{{json .Runtimes}}"), "docker usable there, with nvidia"),
    ]


def flash_commands(image: str, to: SshTarget | str, run: bool, serve_port: int | None = None) -> list[Command]:
    """The transfer (`docker save IMAGE | ssh USER@HOST docker load`) and, with run, the chat on the board, or
    for a server image, the server started in the background with its port published (and the API key passed
    on from the environment of the `docker run`, when the board's shell sets EDGEKIT_API_KEY)."""
    dest = parse_ssh_target(to) if isinstance(to, str) else to
    cmds = [Command(("docker", "save", image), f"copy {image} to {dest.dest}", pipe_into=dest.ssh("docker", "load"))]
    if run and serve_port is not None:
        cmds.append(Command(dest.ssh("docker", "run", "--runtime", "nvidia", "-d", "--rm", "-p",
                                     f"{serve_port}:{serve_port}", "-e", "EDGEKIT_API_KEY", image),
                            f"start edgekit serve in {image} on {dest.dest}"))  # fmt: skip
    elif run:
        cmds.append(
            Command(dest.ssh("docker", "run", "--runtime", "nvidia", "-it", "--rm", image, tty=True),
                    f"start the chat in {image} on {dest.dest}", interactive=True)
        )  # fmt: skip
    return cmds


# ------------------------------------------------------------------ checks


def preflight_flash(image: str, to: SshTarget, run: bool) -> BoardFacts:
    """Run the checks; raise with the fix at the first that fails. Returns what was learnt."""
    from edgekit import shell

    facts = BoardFacts()
    inspect, reach, release, df, docker = check_commands(image, to)
    local = shell.capture(inspect)
    if local.code == shell.NOT_FOUND:
        raise MissingDependencyError("docker is not installed here (not on PATH): it is needed to save the image")
    if not local.ok:
        why = local.first_error_line()
        if "no such image" in why.lower():
            raise UsageError(f"no image {image} here: build it with `edgekit container build`")
        raise ResourceError(f"docker here could not read {image}: {why}")
    facts.image_size, labels = parse_image_inspect(local.out)
    facts.image_l4t = labels.get("edgekit.l4t")
    if labels.get("edgekit.serve") == "1":
        facts.serve_port = int(labels.get("edgekit.port") or 8000)
    answer = shell.capture(reach, timeout=CONNECT_TIMEOUT_S + 10)
    if not answer.ok:
        raise ResourceError(f"board unreachable over SSH: {_ssh_why(answer, to)}")
    facts.l4t = _remote(shell.capture(release), release, to, "reading /etc/nv_tegra_release", parse_l4t_release)
    facts.jetpack = jetpack_for_l4t(facts.l4t)
    if facts.l4t is None:
        raise UsageError(f"{to.host} has no readable /etc/nv_tegra_release: is it a Jetson?")
    if facts.image_l4t in (None, "", "unknown"):
        facts.notes.append(f"{image} carries no edgekit.l4t label: its L4T release could not be compared")
    elif not l4t_compatible(facts.image_l4t, facts.l4t):
        raise UsageError(
            f"{image} is built for L4T {facts.image_l4t} but {to.host} runs L4T {facts.l4t} (JetPack "
            f"{facts.jetpack or '?'}): images run only on the same L4T release family; rebuild with "
            f"`edgekit container build --l4t {facts.l4t} ...`"
        )
    parsed = _remote(shell.capture(df), df, to, "reading its free disk", parse_df)
    if parsed is None:
        raise ExternalToolError(f"could not read the free disk of {to.host} from `df`")
    facts.free_bytes, facts.free_on = parsed
    need = int(facts.image_size * FREE_FACTOR)
    if facts.free_bytes < need:
        raise ResourceError(
            f"{to.host} has {facts.free_bytes / GiB:.1f} GB free on {facts.free_on}, and loading {image} "
            f"({facts.image_size / GiB:.1f} GB) needs about {need / GiB:.1f} GB: free space there "
            "(`docker system prune`, `docker image rm` of old images) and try again"
        )
    runtimes = shell.capture(docker)
    if not runtimes.ok:
        why = runtimes.first_error_line()
        if "permission denied" in why.lower():
            fix = f"add {to.user} to the docker group there (`sudo usermod -aG docker {to.user}`, then log in again)"
        else:
            fix = "install docker and the NVIDIA container runtime there (JetPack's nvidia-container package)"
        raise MissingDependencyError(f"docker is not usable by {to.user} on {to.host} ({why}): {fix}")
    try:
        facts.docker_runtimes = sorted(json.loads(runtimes.out or "{}"))
    except json.JSONDecodeError:
        facts.notes.append("could not read docker's runtimes on the board")
    if "nvidia" not in facts.docker_runtimes:
        message = (
            f"docker on {to.host} has no nvidia runtime ({', '.join(facts.docker_runtimes) or 'none'}): install "
            "nvidia-container (sudo apt install nvidia-container) so the image can reach the GPU"
        )
        if run:
            raise MissingDependencyError(message)
        facts.notes.append(message)
    return facts


def _remote(result: Result, cmd: Command, to: SshTarget, doing: str, parse: Any) -> Any:
    if not result.ok:
        raise ResourceError(f"{doing} on {to.host} failed (`{cmd.text()}`): {result.last_error_line()}")
    return parse(result.out)


def _ssh_why(result: Result, to: SshTarget) -> str:
    why = result.last_error_line()
    if "permission denied" in why.lower():
        return f"{why} (authorize your key first: ssh-copy-id {to.dest})"
    return f"{why} (check the address, that the board is on and that sshd runs there)"


def server_url(to: SshTarget, port: int) -> str:
    return f"http://{to.host}:{port}/v1"


def run_flash(image: str, to: SshTarget, run: bool, serve_port: int | None = None) -> None:
    """The transfer, then (with run) the interactive chat on the board, or the server; output on the terminal."""
    from edgekit import shell

    for cmd in flash_commands(image, to, run, serve_port):
        result = shell.stream(cmd)
        if not result.ok:
            raise ExternalToolError(f"`{cmd.text()}` failed: {result.last_error_line()}")

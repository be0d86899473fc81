"""`edgekit container flash` (edgekit.container.flash): image and SSH target names, the pipeline, board checks."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from container_helpers import Stubs, one_line_error

from edgekit.container.flash import parse_ssh_target
from edgekit.container.images import check_image_name
from edgekit.errors import UsageError

L4T_36_4_3 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025"
L4T_35_4_1 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 2023"
SSH_OPTS = "-o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=accept-new"


def test_image_names_and_targets() -> None:
    for good in ("edgekit/tiny-d4-w67:ort-r36.4.3", "localhost:5000/a/b:1", "ghcr.io/me/x", "x"):
        assert check_image_name(good) == good
    for bad in ("Edgekit/x:1", "a b", "x:bad tag", "x:-lead"):
        with pytest.raises(UsageError, match="not a docker image name"):
            check_image_name(bad)
    assert parse_ssh_target("nvidia@orin.local").dest == "nvidia@orin.local"
    assert parse_ssh_target("me@10.0.0.7:2222").port == 2222
    assert parse_ssh_target("me@[fe80::1]:22").host == "fe80::1"
    for bad in ("orin.local", "me@", "me@host:99999"):
        with pytest.raises(UsageError):
            parse_ssh_target(bad)


def test_flash_dry_run_prints_the_pipeline(cli) -> None:
    r = cli("container", "flash", "--image", "edgekit/tiny:ort-r36.4.3", "--to", "nvidia@orin.local", "--run",
            "--dry-run", "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    runs = [c["run"] for c in report["checks"]] + [c["run"] for c in report["commands"]]
    assert runs == [
        "docker image inspect --format '{{.Size}} {{json .Config.Labels}}' edgekit/tiny:ort-r36.4.3",
        f"ssh {SSH_OPTS} nvidia@orin.local true",
        f"ssh {SSH_OPTS} nvidia@orin.local cat /etc/nv_tegra_release",
        f"ssh {SSH_OPTS} nvidia@orin.local 'df -Pk /var/lib/docker 2>/dev/null || df -Pk /'",
        f"ssh {SSH_OPTS} nvidia@orin.local docker info --format '{{{{json .Runtimes}}}}'",
        f"docker save edgekit/tiny:ort-r36.4.3 | ssh {SSH_OPTS} nvidia@orin.local docker load",
        f"ssh {SSH_OPTS} -t nvidia@orin.local docker run --runtime nvidia -it --rm edgekit/tiny:ort-r36.4.3",
    ]
    r = cli("container", "flash", "--image", "x:1", "--to", "me@10.0.0.7:2222", "--dry-run")
    assert r.code == 0 and f"docker save x:1 | ssh {SSH_OPTS} -p 2222 me@10.0.0.7 docker load" in r.out
    assert "docker run" not in r.out  # no --run, no chat started
    r = cli("container", "flash", "--image", "x:1", "--to", "orin.local", "--dry-run")
    one_line_error(r, 2, "--to takes USER@HOST")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client here")
def test_flash_to_an_unreachable_board(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = Stubs(tmp_path, monkeypatch, ("docker",))  # docker stands in; ssh is the real client
    stubs.on("docker image inspect", out='2147483648 {"edgekit.l4t":"36.4.3"}\n')
    port = _closed_port()
    r = cli("container", "flash", "--image", "edgekit/tiny:1", "--to", f"nvidia@127.0.0.1:{port}")
    one_line_error(r, 5, "board unreachable over SSH:", f"port {port}", "Connection refused")


def _board(stubs: Stubs, l4t: str = L4T_36_4_3, free_kb: int = 20_000_000, docker: dict | None = None) -> Stubs:
    stubs.on("docker image inspect", out='2147483648 {"edgekit.l4t":"36.4.3","edgekit.shape":"d4-w67"}\n')
    stubs.on("docker save", write_bytes=1_000_000)
    stubs.on(" true", out="")
    stubs.on("cat /etc/nv_tegra_release", out=l4t + "\n")
    stubs.on("df -Pk", out=f"Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/nvme0n1p1 "
                           f"239000000 100000000 {free_kb} 45% /\n")  # fmt: skip
    stubs.on(
        "docker info", **(docker or {"out": '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'})
    )
    stubs.on("docker load", out="Loaded image: edgekit/tiny:1\n", read_stdin=True)
    return stubs


def test_flash_checks_the_board_then_streams_the_image(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = _board(Stubs(tmp_path, monkeypatch, ("docker", "ssh")))
    r = cli("container", "flash", "--image", "edgekit/tiny:1", "--to", "nvidia@orin.local", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["loaded"] and report["board"]["l4t"] == "36.4.3" and report["board"]["jetpack"] == "6.2"
    assert report["board"]["free_bytes"] == 20_000_000 * 1024 and report["board"]["docker_runtimes"] == [
        "nvidia",
        "runc",
    ]
    load = [c for c in stubs.calls() if c["argv"][-2:] == ["docker", "load"]]
    assert len(load) == 1 and load[0]["stdin_bytes"] == 1_000_000  # every byte docker save wrote arrived


def test_flash_run_of_a_server_image_starts_it_and_says_where(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = Stubs(tmp_path, monkeypatch, ("docker", "ssh"))
    stubs.on("docker image inspect",
             out='2147483648 {"edgekit.l4t":"36.4.3","edgekit.serve":"1","edgekit.port":"8011"}\n')  # fmt: skip
    _board(stubs).on("docker run", out="4f1c0ffee\n")
    r = cli("container", "flash", "--image", "edgekit/tiny:1", "--to", "nvidia@orin.local", "--run", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["url"] == "http://orin.local:8011/v1" and report["board"]["serve_port"] == 8011
    run = [c for c in stubs.calls() if "run" in c["argv"] and "docker" in c["argv"]][-1]["argv"]
    assert "-d" in run and "8011:8011" in run and "-it" not in run and "EDGEKIT_API_KEY" in run


def test_flash_refuses_an_unfit_board(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("container", "flash", "--image", "edgekit/tiny:1", "--to", "nvidia@orin.local")
    stubs = _board(Stubs(tmp_path, monkeypatch, ("docker", "ssh")), l4t=L4T_35_4_1)
    one_line_error(cli(*args), 2, "built for L4T 36.4.3 but orin.local runs L4T 35.4.1", "--l4t 35.4.1")
    stubs.rules.clear()
    _board(stubs, free_kb=1_000_000)  # 1 GB free for a 2 GB image
    one_line_error(cli(*args), 5, "orin.local has 1.0 GB free on /", "needs about 3.0 GB", "docker system prune")
    stubs.rules.clear()
    _board(stubs, docker={"err": "permission denied while trying to connect to the Docker daemon socket\n", "code": 1})
    one_line_error(cli(*args), 4, "docker is not usable by nvidia", "usermod -aG docker nvidia")
    stubs.rules.clear()
    _board(stubs, docker={"out": '{"runc":{"path":"runc"}}'})
    one_line_error(cli(*args, "--run"), 4, "no nvidia runtime", "nvidia-container")
    assert not any(c["argv"][-2:] == ["docker", "load"] for c in stubs.calls())  # nothing was sent
    stubs.rules.clear()
    stubs.on("docker image inspect", err="Error response from daemon: No such image: edgekit/tiny:1\n", code=1)
    one_line_error(cli(*args), 2, "no image edgekit/tiny:1 here")

"""Every row of the bad-input table (tests/bad_inputs.py): the right exit code, one line on stderr that says
what is wrong, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import CASES  # noqa: E402  (tests/ is on the path: conftest)


def fill(argv: list[str], places: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in places.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


@pytest.fixture(scope="module")
def places(tiny_plan: Path, tiny_llama_dir: Path, tiny_subnet: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad-input")
    (root / "empty.jsonl").write_text("")
    (root / "garbage").write_bytes(b"\x00\x01 not json: [ {\n")
    (root / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    (root / "bad.jsonl").write_text('{"prompt": "one"}\n{"prompt": \n')
    (root / "plain.txt").write_text("a file, not a folder\n")
    (root / "exists").mkdir()
    (root / "tmp").mkdir()
    return {
        "plan": str(tiny_plan), "model": str(tiny_llama_dir), "subnet": str(tiny_subnet),
        "missing": str(root / "missing"), "empty": str(root / "empty.jsonl"), "garbage": str(root / "garbage"),
        "latin1": str(root / "latin1.txt"), "jsonl_bad": str(root / "bad.jsonl"), "file": str(root / "plain.txt"),
        "out": str(root / "out"), "exists": str(root / "exists"), "tmp": str(root / "tmp"),
    }  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "fragment"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code(cli, places, argv: list[str], code: int, fragment: str) -> None:
    r = cli(*fill(argv, places))
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert "Traceback" not in r.err, r.err
    assert r.code == code and len(lines) == 1 and lines[0].startswith("error:"), (r.code, r.err)
    assert fill([fragment], places)[0] in lines[0], lines[0]
    assert not Path(places["out"]).exists()  # refused before anything was written

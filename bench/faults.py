"""Fault injection: what edgekit does under SIGKILL, flipped bytes, bad input and a long chat, counted.

    .venv/bin/python bench/faults.py [--kills 10] [--flips 10] [--turns 60] [--seed 0]

Everything runs through the console script (`python -m edgekit`), as a user runs it, on the tests' tiny random
Llama (tests/tiny.py) in a scratch EDGEKIT_HOME: no model hub, no ../shared.
- kills: each of pull, extract, deploy and train is started, SIGKILLed after a random delay within its usual
  run time, and then run again to the end. Counted: the programs it had started still alive 2 s after the
  kill (orphans), the `.partial-*`/scratch folders left right after the kill, those still there after the
  next run (leftovers: the acceptance figure), and whether the destination that existed before still loads.
- flips: one random byte of one random file of each artifact kind (pulled model, plan, extracted checkpoint,
  elastic checkpoint, deployment, LUT) is flipped, once leaving the mtime changed and once putting it back
  (os.utime), then the artifact is used; counted: detected before use (exit 3, one line) or not.
- bad input: every row of tests/bad_inputs.py through the console script: the exit code it names, one line,
  no traceback.
- chat: a --plain session of --turns messages on stdin, among them an over-long one and empty ones; then the
  store must hold every accepted turn (user and reply), and a store truncated mid-line must lose nothing.
Results go to bench/results/faults.json with the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import tiny  # noqa: E402
from bad_inputs import CASES  # noqa: E402
from common import RESULTS, describe, machine, write_result  # noqa: E402

PROFILE_FAST = ["--runs", "1", "--new-tokens", "4", "--prompt-lens", "8,24"]
PARTIAL = ".partial-"


class World:
    """A scratch EDGEKIT_HOME with one artifact of every kind, made by the real commands."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.env = {**os.environ, "EDGEKIT_HOME": str(self.home), "EDGEKIT_DATA": str(root / "data"),
                    "PYTHONWARNINGS": "ignore"}  # fmt: skip

    def run(self, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit", *args], env=self.env, capture_output=True, text=True,
                              input=stdin, timeout=timeout)  # fmt: skip

    def must(self, *args: str) -> None:
        done = self.run(*args)
        if done.returncode != 0:
            raise SystemExit(f"setup step failed: edgekit {' '.join(args)}: {done.stderr.strip()[-400:]}")

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "edgekit", *args], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip

    def build(self) -> None:
        """Every artifact, skipping those a kept scratch folder (--root) already has."""
        import yaml

        self.calib = self.root / "calib.txt"
        self.model = self.home / "models" / "tiny-llama"
        self.plan = self.root / "plan"
        self.subnet = self.root / "subnet"
        self.deployment = self.root / "deployment"
        self.run_dir = self.root / "train"
        self.checkpoint = self.run_dir / "elastic"
        self.wheel = next((self.root / "wheel").glob("*.whl"), None) if (self.root / "wheel").is_dir() else None
        if self.wheel is None:
            src = tiny.build_tiny_llama(self.root / "src" / "model", seed=1, layers=6, hidden=96, ffn=256, heads=6,
                                        kv_heads=2)  # fmt: skip
            for folder in ("gguf", "wheel"):
                (self.root / folder).mkdir(exist_ok=True)
            gguf = tiny.write_gguf(src, self.root / "gguf" / "tiny-llama.F32.gguf")
            self.wheel = tiny.build_wheel(gguf, self.root / "wheel")
            self.home.mkdir(parents=True, exist_ok=True)
            entry = {"name": "tiny-llama", "title": "tiny test Llama", "hf_id": "edgekit/tiny-llama",
                     "package": "tiny-llm", "package_version": "0.0.1", "gguf_member": f"tiny_llm/{gguf.name}",
                     "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}  # fmt: skip
            (self.home / "models.yaml").write_text(yaml.safe_dump([entry]))
            self.calib.write_text(tiny.CORPUS * 3)
        steps = [
            (self.model, ["models", "pull", "tiny-llama", "--from-wheel", str(self.wheel)]),
            (self.plan, ["elastic", "plan", "--model", "tiny-llama", "--calib", str(self.calib), "--out",
                         str(self.plan), *tiny.TINY_PLAN_BUDGET]),
            (self.subnet, ["elastic", "extract", "--plan", str(self.plan), "--shape", "d4-w67", "--out",
                           str(self.subnet)]),
            (self.home / "luts", ["profile", "--target", "host", "--plan", str(self.plan), "--shapes",
                                  "d6-w100,d3-w100,d6-w50,d3-w50,d4-w67", "--fit-on", "d6-w100,d3-w100,d6-w50,d3-w50",
                                  *PROFILE_FAST]),
            (self.deployment, ["deploy", "--target", "host", "--budget", "100%", "--plan", str(self.plan), "--out",
                               str(self.deployment)]),
            (self.checkpoint, self.train_args(self.run_dir)),
        ]  # fmt: skip
        for made, argv in steps:
            if not made.exists():
                if made == self.checkpoint:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                self.must(*argv)

    def train_args(self, out: Path) -> list[str]:
        return ["elastic", "train", "--out", str(out), "--no-eval", f"plan={self.plan}",
                f"data.train={self.calib}", "data.seq_len=32", "train.batch_size=2", "train.steps=6", "train.warmup=1",
                "train.checkpoint_every=2", "train.grid=[d6-w100, d5-w67, d4-w50, d3-w34]", "smol.rank=2",
                "smol.experts=3", "data.chat=", "data.chat_fraction=0"]  # fmt: skip


# ------------------------------------------------------------------ kills


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def partials(root: Path) -> list[Path]:
    """Temporary folders edgekit may leave: its `.partial-*` folders under the world, and any of the `/tmp`
    folders older versions built in (callers compare against what was there before a trial)."""
    found = [p for p in root.rglob(f"{PARTIAL}*") if p.is_dir()]
    tmp = Path(tempfile.gettempdir())
    found += [
        p for p in tmp.glob("edgekit-*") if p.is_dir() and not p.name.startswith(("edgekit-faults-", "edgekit-tests-"))
    ]
    return found


def kill_trials(w: World, n: int, rng: random.Random) -> dict[str, Any]:
    jobs = {
        "pull": (["models", "pull", "tiny-llama", "--from-wheel", str(w.wheel), "--force"], w.model,
                 ["generate", "hi", "--model", "tiny-llama", "--max-new-tokens", "2"]),
        "extract": (["elastic", "extract", "--plan", str(w.plan), "--shape", "d5-w67", "--out", str(w.subnet),
                     "--force"], w.subnet, ["generate", "hi", "--model", str(w.subnet), "--max-new-tokens", "2"]),
        "deploy": (["deploy", "--target", "host", "--budget", "100%", "--plan", str(w.plan), "--out",
                    str(w.deployment), "--force"], w.deployment,
                   ["generate", "hi", "--deployment", str(w.deployment), "--max-new-tokens", "2"]),
        # a killed training run is continued with --resume (a run folder is never replaced): from scratch each time
        "train": (w.train_args(w.root / "train-kill"), None, None),
    }  # fmt: skip
    results: dict[str, Any] = {}
    for name, (argv, dest, use) in jobs.items():
        again_argv = [*argv, "--resume"] if name == "train" else argv
        shutil.rmtree(w.root / "train-kill", ignore_errors=True)
        start = time.perf_counter()
        assert w.run(*argv).returncode == 0, f"{name} does not run to the end"
        span = time.perf_counter() - start
        rows = []
        for _ in range(n):
            shutil.rmtree(w.root / "train-kill", ignore_errors=True)
            before = set(partials(w.root))
            proc = w.start(*argv)
            delay = rng.uniform(0.3, max(0.6, span * 0.9))
            children: set[int] = set()
            deadline = time.perf_counter() + delay
            while time.perf_counter() < deadline and proc.poll() is None:
                children.update(descendants(proc.pid))
                time.sleep(0.02)
            finished = proc.poll() is not None
            proc.kill()
            proc.wait()
            time.sleep(2)
            orphans = [c for c in children if alive(c)]
            for c in orphans:
                os.kill(c, signal.SIGKILL)
            left = [p for p in partials(w.root) if p not in before]
            destination_ok = w.run(*use).returncode == 0 if dest is not None and dest.exists() else None
            again = w.run(*again_argv)
            leftovers = [p for p in partials(w.root) if p not in before]
            rows.append({"delay_s": round(delay, 2), "finished_first": finished, "children": len(children),
                         "orphans": len(orphans), "left_after_kill": len(left),
                         "leftovers_after_next_run": len(leftovers), "destination_loads": destination_ok,
                         "next_run_ok": again.returncode == 0})  # fmt: skip
        results[name] = {"runs": rows, "seconds_per_run": round(span, 2),
                         "orphans": sum(r["orphans"] for r in rows),
                         "left_after_kill": sum(r["left_after_kill"] for r in rows),
                         "leftovers": sum(r["leftovers_after_next_run"] for r in rows),
                         "destination_broken": sum(r["destination_loads"] is False for r in rows),
                         "next_run_failed": sum(not r["next_run_ok"] for r in rows)}  # fmt: skip
        print(f"kill {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'runs'})}", flush=True)
    return results


# ------------------------------------------------------------------ flips


def flip_trials(w: World, n: int, rng: random.Random) -> dict[str, Any]:
    kinds = {
        "model": (w.model, ["generate", "hi", "--model", "tiny-llama", "--max-new-tokens", "2"]),
        # deploy reads the whole plan: plan.json, the permutations (to cut the shape) and the accuracy predictor
        "plan": (w.plan, ["deploy", "--target", "host", "--budget", "100%", "--plan", str(w.plan), "--out",
                          str(w.root / "flip-deploy"), "--force", "--no-verify"]),
        "extract": (w.subnet, ["generate", "hi", "--model", str(w.subnet), "--max-new-tokens", "2"]),
        "checkpoint": (w.checkpoint, ["chat", "--elastic", str(w.checkpoint), "--prompt", "hi", "--max-new-tokens",
                                      "2"]),
        "deployment": (w.deployment, ["generate", "hi", "--deployment", str(w.deployment), "--max-new-tokens", "2"]),
        "lut": (w.home / "luts", ["deploy", "--target", "host", "--budget", "100%", "--plan", str(w.plan),
                                  "--dry-run"]),
    }  # fmt: skip
    results: dict[str, Any] = {}
    for kind, (folder, use) in kinds.items():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        rows = []
        for i in range(2 * n):
            keep_mtime = i % 2 == 1
            path = rng.choice(files)
            original = path.read_bytes()
            if not original:
                continue
            stat = path.stat()
            data = bytearray(original)
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
            if keep_mtime:
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            done = w.run(*use)
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            detected = done.returncode == 3 and len(lines) == 1 and "Traceback" not in done.stderr
            rows.append({"file": str(path.relative_to(folder)), "offset": at, "mtime_restored": keep_mtime,
                         "exit": done.returncode, "detected": detected,
                         "said": lines[-1][:200] if lines else ""})  # fmt: skip
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        results[kind] = {"trials": len(rows), "detected": sum(r["detected"] for r in rows), "runs": rows}
        print(f"flip {kind}: {results[kind]['detected']}/{len(rows)} detected", flush=True)
    return results


# ------------------------------------------------------------------ bad input


def bad_input(w: World) -> dict[str, Any]:
    places = {"plan": str(w.plan), "model": str(w.model), "subnet": str(w.subnet), "missing": str(w.root / "none"),
              "tmp": str(w.root / "scratch"), "out": str(w.root / "bad-out"), "exists": str(w.root / "exists"),
              "file": str(w.calib)}  # fmt: skip
    (w.root / "scratch").mkdir(exist_ok=True)
    (w.root / "exists").mkdir(exist_ok=True)
    junk = {"empty": b"", "garbage": b"\x00\x01 not json: [ {\n", "latin1": "café crème\n".encode("latin-1"),
            "jsonl_bad": b'{"prompt": "one"}\n{"p": \n'}  # fmt: skip
    for name, content in junk.items():
        (w.root / name).write_bytes(content)
        places[name] = str(w.root / name)
    rows = []
    for argv, code, fragment in CASES:
        args = [fill(a, places) for a in argv]
        try:
            done = subprocess.run([sys.executable, "-m", "edgekit", *args], env=w.env, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            rows.append({"argv": args, "ok": False, "why": "timed out"})
            continue
        err = done.stderr.decode(errors="replace")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        ok = (done.returncode == code and len(lines) == 1 and "Traceback" not in err
              and fill(fragment, places) in lines[0])  # fmt: skip
        rows.append({"argv": args, "expected": code, "exit": done.returncode, "lines": len(lines), "ok": ok,
                     "said": lines[0][:200] if lines else ""})  # fmt: skip
    good = sum(r["ok"] for r in rows)
    print(f"bad input: {good}/{len(rows)} one line with the right exit code", flush=True)
    return {"cases": len(rows), "clean": good, "runs": rows}


def fill(arg: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


# ------------------------------------------------------------------ chat


def chat_session(w: World, turns: int, rng: random.Random) -> dict[str, Any]:
    words = tiny.CORPUS.split()
    lines, accepted = [], 0
    for i in range(turns):
        if i % 20 == 7:
            lines.append("")  # an empty line: nothing sent
        elif i % 20 == 13:
            lines.append(" ".join(rng.choice(words) for _ in range(6000)))  # longer than the context: refused
        else:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))))
            accepted += 1
    done = w.run("chat", "--plain", "--model", "tiny-llama", "--max-new-tokens", "4", stdin="\n".join(lines) + "\n",
                 timeout=1800)  # fmt: skip
    convs = sorted((w.root / "data" / "conversations").glob("*.jsonl"))
    newest = max(convs, key=lambda p: p.stat().st_mtime) if convs else None
    stored = len(newest.read_text().splitlines()) - 1 if newest else 0  # less the header line
    # a store truncated mid-line (a crash while appending), then one more message: only the torn line is lost
    lost_after_truncation = None
    if newest is not None:
        from edgekit.chat.store.conversations import Message, Store

        text = newest.read_text()
        newest.write_text(text[:-5])
        store = Store(newest.parent)
        conv = store.load(newest.stem)
        kept = len(conv.messages)  # the torn last line is unreadable; everything before it is there
        store.append(conv, Message("user", "after the crash"))
        lost_after_truncation = kept + 1 - len(Store(newest.parent).load(newest.stem).messages)
    result = {"turns": turns, "accepted": accepted, "exit": done.returncode, "stored_messages": stored,
              "lost": 2 * accepted - stored, "lost_after_truncation": lost_after_truncation}  # fmt: skip
    print(f"chat: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs per command")
    ap.add_argument("--flips", type=int, default=10, help="byte flips per artifact kind and mtime mode")
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--root", type=Path, help="a scratch folder kept by --keep: its artifacts are reused")
    ap.add_argument("--only", default="", help="rerun these parts (bad_input,flips,kills,chat) into the existing "
                                               "results; the others stay as their run left them")  # fmt: skip
    args = ap.parse_args()
    parts = [p for p in args.only.split(",") if p] or ["bad_input", "flips", "kills", "chat"]
    if set(parts) - {"bad_input", "flips", "kills", "chat"}:
        raise SystemExit(f"--only takes bad_input, flips, kills, chat, not {args.only}")
    rng = random.Random(args.seed)
    root = args.root or Path(tempfile.mkdtemp(prefix="edgekit-faults-"))
    start = time.perf_counter()
    try:
        w = World(root)
        w.build()
        print("artifacts built", flush=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        result = {"machine": machine(), "settings": settings}
        if args.only:
            earlier = RESULTS / "faults.json"
            if not earlier.is_file():
                raise SystemExit("--only needs an earlier full run's bench/results/faults.json")
            result = {**json.loads(earlier.read_text()), "rerun": {"parts": parts, "machine": machine(),
                                                                   "settings": settings}}  # fmt: skip
        runs = {
            "bad_input": lambda: bad_input(w),
            "flips": lambda: flip_trials(w, args.flips, rng),
            "kills": lambda: kill_trials(w, args.kills, rng),
            "chat": lambda: chat_session(w, args.turns, rng),
        }
        for part in parts:
            result[part] = runs[part]()
        if not args.only:
            result["seconds"] = round(time.perf_counter() - start, 1)
        write_result("faults", result)
        print(summary(result))
        print(describe(result["machine"]))
    finally:
        if not args.keep and args.root is None:
            shutil.rmtree(root, ignore_errors=True)


def summary(r: dict[str, Any]) -> str:
    b, f, k, c = r["bad_input"], r["flips"], r["kills"], r["chat"]
    lines = [f"bad input: {b['clean']}/{b['cases']} one line, right exit code, no traceback"]
    for kind, x in f.items():
        lines.append(f"flips {kind}: {x['detected']}/{x['trials']} detected before use")
    for job, x in k.items():
        lines.append(f"kill {job}: {len(x['runs'])} kills, {x['orphans']} orphans, {x['left_after_kill']} left "
                     f"after the kill, {x['leftovers']} after the next run, {x['destination_broken']} destinations "
                     "broken")  # fmt: skip
    lines.append(f"chat: {c['turns']} turns, {c['lost']} messages lost, {c['lost_after_truncation']} after truncation")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

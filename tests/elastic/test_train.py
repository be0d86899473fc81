"""One-for-all training on the tiny plan: sampling, balancing, exact resume, recipes and their bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from edgekit.elastic.recipe import load_recipe
from edgekit.elastic.train import balance_weights, prepare_run, sample_shapes, train
from edgekit.errors import UsageError
from edgekit.shapes import Shape


def _recipe(plan: Path, data: Path, *extra: str):
    return load_recipe(
        None,
        [
            f"plan={plan}",
            f"data.train={data}",
            "data.seq_len=32",
            "train.batch_size=2",
            "train.steps=4",
            "train.warmup=1",
            "train.lr=0.01",
            "train.checkpoint_every=2",
            "train.grid=[d6-w100, d5-w67, d4-w50, d3-w34]",
            "smol.rank=2",
            "smol.experts=3",
            *extra,
        ],
    )


def test_sandwich_always_has_the_largest_and_the_smallest():
    grid = [Shape(d, f, h) for d in (6, 5, 4, 3) for f, h in ((100, 3), (50, 2))]
    params = lambda s: s.depth * s.ffn * s.heads  # noqa: E731
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        shapes = sample_shapes(grid, 4, True, rng, params)
        assert shapes[0] == Shape(6, 100, 3) and shapes[-1] == Shape(3, 50, 2) and len(set(shapes)) == 4
        seen.update(shapes[1:-1])
    assert len(seen) == len(grid) - 2, "the middle shapes are drawn from the whole rest of the grid"
    plain = [sample_shapes(grid, 2, False, rng, params) for _ in range(50)]
    assert any(Shape(6, 100, 3) not in s for s in plain), "without the sandwich the largest is not forced"


def test_balancing_rescales_magnitudes_but_keeps_directions():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = [x.sum() * 2, x.pow(2).sum() * 10, x.sum() * 0.1]
    weights = balance_weights(losses, True)
    assert [float(w * loss.detach()) for w, loss in zip(weights, losses, strict=True)] == pytest.approx([6.0] * 3)
    grad = torch.autograd.grad(weights[1] * losses[1], x)[0]
    plain = torch.autograd.grad(x.pow(2).sum() * 10, x)[0]
    assert torch.allclose(grad, plain * 6.0 / 50.0)
    assert all(float(w) == 1.0 for w in balance_weights(losses, False))


@pytest.mark.parametrize("smol", [["smol.mixing=factors"], ["smol.shared=true"]], ids=["factors", "shared"])
def test_resume_takes_exactly_the_step_the_uninterrupted_run_took(
    tiny_plan: Path, calib_text: Path, tmp_path: Path, smol: list[str]
):
    whole = prepare_run(_recipe(tiny_plan, calib_text, *smol), tmp_path / "a", resume=False)
    losses = []
    train(whole, on_step=lambda r: losses.append(r.losses))
    assert (tmp_path / "a/checkpoints/step-000002/state.json").is_file()
    assert (tmp_path / "a/metrics.csv").read_text().count("\n") == 5  # header + 4 steps
    # a second run killed during step 3, after its step-2 checkpoint and step 3's log line, then resumed
    cut = tmp_path / "b"

    def crash(result) -> None:
        if result.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepare_run(_recipe(tiny_plan, calib_text, *smol), cut, resume=False), on_step=crash)
    resumed = prepare_run(_recipe(tiny_plan, calib_text, *smol), cut, resume=True)
    assert resumed.state.step == 2
    # the log forgets what the checkpoint does not hold, so the resumed run does not log step 3 twice
    assert [row.split(",")[0] for row in (cut / "metrics.csv").read_text().splitlines()[1:]] == ["0", "1"]
    nxt = resumed.step()
    assert nxt.losses == pytest.approx(losses[2], rel=1e-6, abs=1e-7)


def test_stop_at_pauses_the_same_schedule_at_a_checkpoint(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    whole = prepare_run(_recipe(tiny_plan, calib_text, "train.checkpoint_every=100"), tmp_path / "a", resume=False)
    losses = []
    train(whole, on_step=lambda r: losses.append(r.losses))
    paused = prepare_run(_recipe(tiny_plan, calib_text, "train.checkpoint_every=100"), tmp_path / "b", resume=False)
    assert train(paused, stop_at=3).step == 3
    assert (tmp_path / "b/checkpoints/step-000003/state.json").is_file()  # saved although not a multiple of 100
    resumed = prepare_run(_recipe(tiny_plan, calib_text, "train.checkpoint_every=100"), tmp_path / "b", resume=True)
    assert resumed.step().losses == pytest.approx(losses[3], rel=1e-6, abs=1e-7)


def test_training_lowers_every_shapes_loss(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    trainer = prepare_run(
        _recipe(tiny_plan, calib_text, "train.steps=30", "train.checkpoint_every=100", "train.shapes_per_step=4"),
        tmp_path / "run",
        resume=False,
    )
    seen: set[str] = set()
    batches = [trainer.data.batch(step) for step in range(4)]

    def data_loss(shape: Shape) -> float:
        # cross-entropy on the same batches before and after: a step's own loss is too noisy to compare,
        # and the narrower shapes' training loss is distillation towards a moving teacher
        trainer.smol.eval()
        with torch.no_grad():
            return sum(trainer.model(ids, shape, labels=ids).loss.item() for ids in batches) / len(batches)

    before = {s.name: data_loss(s) for s in trainer.grid}
    train(trainer, on_step=lambda r: seen.update(r.losses))
    assert seen == {"d6-f100-h3", "d5-f75-h2", "d4-f50-h2", "d3-f25-h1"}  # canonical names
    after = {s.name: data_loss(s) for s in trainer.grid}
    assert all(after[k] < before[k] for k in before), (before, after)


def test_frozen_teacher_caches_top_k_once(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    trainer = prepare_run(
        _recipe(tiny_plan, calib_text, "train.teacher=frozen", "train.teacher_topk=8", "train.steps=2"),
        tmp_path / "run",
        resume=False,
    )
    stages: list[str] = []
    train(trainer, stop_at=1, on_stage=stages.append)
    cache = tmp_path / "run/teacher-topk.safetensors"
    assert cache.is_file()
    assert trainer.teacher_cache["indices"].shape[-1] == 8
    assert stages and stages[-1].endswith(f"{len(trainer.data.rows(0))}/{len(trainer.data.rows(0))} sequences")
    # a run paused at step 1 caches only step 0's sequences; resumed, it adds the rest, and only the
    # sequences the schedule visits, not the whole corpus
    assert torch.equal(trainer.teacher_cache["rows"], torch.unique(trainer.data.rows(0)))
    first = {k: v.clone() for k, v in trainer.teacher_cache.items()}
    trainer = prepare_run(trainer.recipe, tmp_path / "run", resume=True)
    stages.clear()
    train(trainer, on_stage=stages.append)
    visited = torch.unique(torch.cat([trainer.data.rows(s) for s in range(2)]))
    assert torch.equal(trainer.teacher_cache["rows"], visited)
    assert len(visited) < len(trainer.data)
    added = len(visited) - len(first["rows"])
    assert added > 0 and stages[-1].endswith(f"{added}/{added} sequences")  # extended, not recomputed
    kept = torch.searchsorted(trainer.teacher_cache["rows"], first["rows"])
    assert torch.equal(trainer.teacher_cache["values"][kept], first["values"])
    # and a step's cached logits are the original model's (no adapters) top-k for that step's batch
    smol, trainer.model.smol = trainer.model.smol, None
    with torch.no_grad():
        top = torch.topk(trainer.model(trainer.data.batch(1)).logits[:, :-1].float(), 8, dim=-1)
    trainer.model.smol = smol
    values, indices = trainer._cached_teacher(1)
    torch.testing.assert_close(values.float(), top.values, atol=2e-2, rtol=2e-3)
    assert (indices == top.indices).float().mean() > 0.95  # ties in fp16 may swap neighbours
    # a resumed run reads the cache back instead of recomputing it
    again = prepare_run(trainer.recipe, tmp_path / "run", resume=True)
    computed: list[int] = []
    again.build_teacher_cache(on_progress=lambda done, total: computed.append(total))
    assert torch.equal(again.teacher_cache["rows"], visited)
    assert computed == []


def test_anchor_keeps_the_full_shape_near_the_original_model(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    import torch.nn.functional as F

    from edgekit.elastic.train import soft_ce_topk

    def original_logits(trainer, ids):
        smol, trainer.model.smol = trainer.model.smol, None
        with torch.no_grad():
            logits = trainer.model(ids).logits[:, :-1].float()
        trainer.model.smol = smol
        return logits

    drift = {}
    for anchor in (0.0, 4.0):
        extra = ("train.steps=12", "train.checkpoint_every=100", "train.teacher_topk=8", f"train.anchor={anchor}")
        trainer = prepare_run(_recipe(tiny_plan, calib_text, *extra), tmp_path / f"a{anchor}", resume=False)
        losses = []
        train(trainer, on_step=lambda r, out=losses: out.append(r.losses))
        ids = trainer.data.data[trainer.rows(0)]
        before = original_logits(trainer, ids)
        if anchor:
            # at step 0 the adapters add nothing, so the full shape's loss is the data loss plus the anchor
            # against the original model's own top-k
            ce = F.cross_entropy(before.reshape(-1, before.shape[-1]), ids[:, 1:].reshape(-1))
            top = torch.topk(before, 8, dim=-1)
            expected = ce + anchor * soft_ce_topk(before, top.values.half(), top.indices, 1.0)
            assert losses[0]["d6-f100-h3"] == pytest.approx(expected.item(), rel=2e-3)
        with torch.no_grad():
            after = trainer.model(ids, trainer.full).logits[:, :-1].float()
        drift[anchor] = F.kl_div(after.log_softmax(-1), before.log_softmax(-1), log_target=True, reduction="batchmean")
    assert drift[4.0] < 0.5 * drift[0.0], drift


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.stepz=3"], "unknown key train.stepz"),
        (["bogus=1"], "unknown key bogus"),
        (["train.steps=0"], "train.steps must be at least 1"),
        (["train.teacher=oracle"], "train.teacher must be inplace or frozen"),
        (["smol.top_k=9"], "top_k must be between 1 and experts"),
        (["train.steps"], "not key=value"),
        (["train.lr=abc"], "train.lr must be a number, got 'abc'"),
        (["train.steps=2.5"], "train.steps must be an integer"),
        (["train.sandwich=maybe"], "train.sandwich must be true or false"),
        (["train.grid=d6-w100"], "train.grid must be a list of strings or null"),
        (["smol.mixing=sum"], "mixing must be outputs or factors"),
        (["train.anchor=-1"], "train.anchor must be at least 0"),
        (["smol.gated=false", "smol.shared=true"], "set smol.shared=false"),
    ],
)
def test_bad_recipes_name_the_key(tiny_plan: Path, calib_text: Path, overrides: list[str], message: str):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        _recipe(tiny_plan, calib_text, *overrides)


def test_bad_runs_are_refused_before_training(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    with pytest.raises(UsageError, match="outside plan"):
        prepare_run(_recipe(tiny_plan, calib_text, "train.grid=[d6-w100, d2-w50]"), tmp_path / "x", resume=False)
    with pytest.raises(UsageError, match="not found"):
        prepare_run(_recipe(tiny_plan, tmp_path / "missing.txt"), tmp_path / "x", resume=False)
    small = tmp_path / "small.txt"
    small.write_text("tiny")
    with pytest.raises(UsageError, match="too small"):
        prepare_run(_recipe(tiny_plan, small), tmp_path / "x", resume=False)
    run = tmp_path / "run"
    train(prepare_run(_recipe(tiny_plan, calib_text, "train.steps=2"), run, resume=False))
    with pytest.raises(UsageError, match="already holds a run"):
        prepare_run(_recipe(tiny_plan, calib_text), run, resume=False)
    with pytest.raises(UsageError, match="another recipe"):
        prepare_run(_recipe(tiny_plan, calib_text, "smol.rank=3"), run, resume=True)


def test_train_cli_writes_an_elastic_checkpoint_that_extracts_exactly(
    tiny_plan: Path, calib_text: Path, tmp_path: Path, cli
):
    import hashlib
    import json

    from transformers import AutoModelForCausalLM

    from edgekit.elastic.source import Source

    # the shipped recipe, its data from a folder laid out as the recipe names it (made here, tiny)
    data = datasets_folder(tmp_path / "datasets", calib_text)
    run = tmp_path / "run"
    args = ["elastic", "train", "--out", str(run), "--json", "--data-dir", str(data), f"plan={tiny_plan}",
            "data.seq_len=32", "train.batch_size=2", "train.steps=3", "train.warmup=1", "train.lr=0.01",
            "train.grid=[d6-w100, d4-w50, d3-w34]", "smol.rank=2", "eval.text_max_tokens=130",
            "eval.window=64", "eval.chat_limit=3", "eval.chat_tokens=8", "train.min_params=0"]  # fmt: skip
    missing = cli(*[a for a in args if a != str(data) and a != "--data-dir"])
    assert missing.code == 2 and "not found" in missing.err and "--data-dir" in missing.err
    result = cli(*args)
    assert result.code == 0, result.err
    # other files than the shipped checkpoint's: the user is told, training goes on
    assert "data.train pydoc/train.txt is not the file smollm2-135m was made with" in result.err
    summary = json.loads(result.out)
    assert summary["training"]["steps"] == 3
    train_file = summary["training"]["data"]["data.train"]
    assert train_file == {
        "name": "pydoc/train.txt",
        "sha256": hashlib.sha256((data / "pydoc/train.txt").read_bytes()).hexdigest(),
    }
    assert set(summary["accuracy"]["shapes"]) == {"d6-f100-h3", "d4-f50-h2", "d3-f25-h1"}
    row = summary["accuracy"]["shapes"]["d4-f50-h2"]
    assert row["ppl"] > 1 and row["domain_ppl"] > 1 and 0 <= row["acc_norm"] <= 1
    # the chat metrics, on the prompt file's held-apart part, against the base model's own replies
    assert row["chat_ppl"] > 1 and 0 <= row["answer_rate"] <= 1 and "dev part" in summary["accuracy"]["data"]["chat"]
    assert summary["training"]["data"]["data.chat"]["name"] == "chat/teacher-smollm2-135m.jsonl"
    ckpt_dir = run / "elastic"
    assert {"plan", "smol.safetensors", "smol.json", "recipe.yaml", "accuracy.json", "manifest.json",
            "accuracy-predictor.json", "chat-predictor.json", "chat-reference.json"} <= {
        p.name for p in ckpt_dir.iterdir()
    }  # fmt: skip
    assert Source.resolve(elastic=str(ckpt_dir)).default_metric() == "chat_ppl"
    out = tmp_path / "sub"
    result = cli("elastic", "extract", "--elastic", str(ckpt_dir), "--shape", "d4-w50", "--out", str(out))
    assert result.code == 0, result.err
    source = Source.resolve(elastic=str(ckpt_dir))
    elastic, ckpt = source.load(), source.checkpoint
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (hf(ids).logits - elastic(ids, ckpt.plan.shape("d4-w50")).logits).abs().max().item() < 1e-5
    # user checkpoints under EDGEKIT_HOME/elastic are listed beside the shipped ones
    import os
    import shutil

    mine = Path(os.environ["EDGEKIT_HOME"]) / "elastic" / "mine"
    shutil.copytree(ckpt_dir, mine)
    listed = json.loads(cli("elastic", "list", "--json").out)
    row = next(r for r in listed["checkpoints"] if r["path"] == str(mine))
    assert row["origin"] == "user" and row["kind"] == "general" and row["ok"] and row["has_accuracy"]
    assert row["steps"] == 3
    assert "smollm2-135m" in listed["plans"]
    shutil.rmtree(mine)
    # a tampered checkpoint is refused
    (ckpt_dir / "smol.safetensors").write_bytes(b"x" * 10)
    result = cli("elastic", "extract", "--elastic", str(ckpt_dir), "--shape", "d4-w50", "--out", str(tmp_path / "o"))
    assert result.code == 3 and "smol.safetensors" in result.err


def datasets_folder(root: Path, text: Path) -> Path:
    """A data folder laid out as the shipped recipe names its files, with tiny contents."""
    from tiny import write_piqa

    for rel in ("pydoc/train.txt", "pydoc/dev.txt", "wikitext-2/valid.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text.read_text())
    write_piqa(root / "piqa")
    (root / "chat").mkdir()
    replies = [{"prompt": f"question {i}?", "response": "an answer " * 12, "finished": i % 2 == 0} for i in range(30)]
    (root / "chat" / "teacher-smollm2-135m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    (root / "chat" / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"ask {i}?"}) + "\n" for i in range(80)))
    return root


def test_per_shape_lora_distills_from_the_frozen_original(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    one = ["train.grid=[d4-w50]", "train.sandwich=false", "train.shapes_per_step=1", "smol.gated=false"]
    with pytest.raises(UsageError, match="train.teacher=frozen"):
        prepare_run(_recipe(tiny_plan, calib_text, *one), tmp_path / "a", resume=False)
    trainer = prepare_run(
        _recipe(tiny_plan, calib_text, *one, "train.teacher=frozen", "train.teacher_topk=4", "train.steps=2"),
        tmp_path / "b",
        resume=False,
    )
    seen = []
    train(trainer, on_step=lambda r: seen.append(r.losses))
    assert [list(s) for s in seen] == [["d4-f50-h2"], ["d4-f50-h2"]]
    assert trainer.teacher_cache is not None  # the loss came from the cached original model


@pytest.mark.parametrize("teacher", ["inplace", "frozen"])
def test_two_processes_take_the_same_steps_as_one(tiny_plan: Path, calib_text: Path, tmp_path: Path, teacher: str):
    """torchrun (or accelerate launch) with 2 processes splits each batch and averages gradients: with
    balancing off that is the single-process update, so the adapters end up the same."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    args = [
        f"plan={tiny_plan}", f"data.train={calib_text}", "data.seq_len=32", "train.batch_size=2", "train.steps=2",
        "train.warmup=1", "train.lr=0.01", "train.grid=[d6-w100, d4-w50, d3-w34]", "smol.rank=2",
        "train.balance=false", "train.device=cpu", f"train.teacher={teacher}", "train.teacher_topk=8",
        "data.chat=", "data.chat_fraction=0",  # plain text only (the shipped recipe mixes in chat replies)
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (
        ("one", [sys.executable, "-m", "edgekit"]),
        (
            "two",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edgekit"],
        ),
    ):
        done = subprocess.run(
            [*launcher, "elastic", "train", "--out", str(tmp_path / name), "--no-eval", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-6000:]  # torchrun's summary comes last, a rank's error before it
    one = load_file(str(tmp_path / "one/elastic/smol.safetensors"))
    two = load_file(str(tmp_path / "two/elastic/smol.safetensors"))
    # B starts at zero, so its size is what training moved it by; the two runs agree to a small part of that
    moved = max(one[k].abs().max().item() for k in one if k.startswith("B."))
    assert moved > 5e-3
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 0.01 * moved
    assert (tmp_path / "two/metrics.csv").read_text().count("\n") == 3  # written once, by rank 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    trainer = prepare_run(_recipe(tiny_plan, calib_text, "train.grad_checkpointing=true"), tmp_path / "r", False)
    assert trainer.model.grad_checkpointing
    ids = trainer.data.batch(0)
    grads = []
    for flag in (True, False):
        trainer.model.grad_checkpointing = flag
        trainer.smol.zero_grad()
        torch.manual_seed(0)
        trainer.smol.train()
        trainer.model(ids, Shape(4, 50, 2), labels=ids).loss.backward()
        grads.append([p.grad.clone() for p in trainer.smol.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_out_of_memory_says_what_to_lower(tiny_plan: Path, calib_text: Path, tmp_path: Path, monkeypatch):
    from edgekit.elastic import train as train_mod
    from edgekit.errors import ResourceError

    trainer = prepare_run(_recipe(tiny_plan, calib_text), tmp_path / "r", resume=False)

    def boom(self):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")

    monkeypatch.setattr(train_mod.Trainer, "step", boom)
    with pytest.raises(ResourceError, match="lower train.batch_size, data.seq_len or train.shapes_per_step"):
        train(trainer)
    assert not (tmp_path / "r/checkpoints").exists()


def test_resume_refuses_a_run_of_another_plan(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    import json

    run = tmp_path / "run"
    train(prepare_run(_recipe(tiny_plan, calib_text, "train.steps=2"), run, resume=False))
    state_path = run / "checkpoints/step-000002/state.json"
    state = json.loads(state_path.read_text())
    state["plan_sha256"] = "0" * 64
    state_path.write_text(json.dumps(state))
    with pytest.raises(UsageError, match="another recipe or model"):
        prepare_run(_recipe(tiny_plan, calib_text), run, resume=True)


def test_training_shapes_are_a_grid_or_the_whole_space_above_a_parameter_floor(tiny_plan: Path) -> None:
    from edgekit.elastic.plan import load_plan
    from edgekit.elastic.recipe import TrainConfig
    from edgekit.elastic.train import training_shapes

    plan = load_plan(tiny_plan)
    g = plan.geometry
    assert training_shapes(plan, TrainConfig(grid=["space"])) == plan.space()
    assert training_shapes(plan, TrainConfig()) == plan.grid()
    assert [s.name for s in training_shapes(plan, TrainConfig(grid=["d4-w50"]))] == ["d4-f50-h2"]
    above = training_shapes(plan, TrainConfig(grid=["space"], min_params=0.5))
    full = g.non_embedding_params(plan.full)
    assert plan.full in above and all(g.non_embedding_params(s) >= 0.5 * full for s in above)
    assert len(above) == sum(g.non_embedding_params(s) >= 0.5 * full for s in plan.space())
    with pytest.raises(UsageError, match="stands alone"):
        _recipe(tiny_plan, tiny_plan / "plan.json", "train.grid=[space, d4-w50]")

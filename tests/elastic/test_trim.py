"""TrimLLM on the tiny plan: the drop rule against brute force, ties, exact resume, the domain checkpoint and its
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekit.elastic.recipe import load_recipe
from edgekit.elastic.train import train
from edgekit.elastic.trim import calibration_ppl, choose_drop, drop_steps, finish_trim, prepare_trim, removal_scores
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
            "train.steps=7",
            "train.warmup=1",
            "train.lr=0.01",
            "train.checkpoint_every=2",
            "train.shapes_per_step=3",
            "smol.gated=false",
            "smol.rank=2",
            "trim.depth=3",
            "trim.interval=2",
            "trim.calibration_tokens=128",
            *extra,
        ],
    )


def test_choose_drop_takes_the_least_harmful_and_breaks_ties_by_the_largest_norm():
    assert choose_drop({0: 5.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 1.0, 2: 9.0}, 0.0) == (1, [1])
    # 3.0 and 3.002 tie within 0.1 %: the larger activation norm goes
    assert choose_drop({0: 3.002, 1: 3.0, 2: 4.0}, {0: 2.0, 1: 1.0, 2: 9.0}, 0.001) == (0, [0, 1])
    # equal norms too: the earlier layer
    assert choose_drop({3: 3.0, 1: 3.0}, {3: 1.0, 1: 1.0}, 0.0) == (1, [1, 3])


def test_drops_happen_every_interval_until_the_depth():
    assert drop_steps(6, 3, 2) == [2, 4, 6]


def test_removal_scores_equal_brute_force(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    trimmer = prepare_trim(_recipe(tiny_plan, calib_text), tmp_path / "run", resume=False)
    layers = trimmer.layers
    shape = Shape(len(layers) - 1, 100, 3)
    scores, norms = removal_scores(trimmer.model.eval(), trimmer.calib, layers, shape)
    for i in layers:
        brute = calibration_ppl(trimmer.model, trimmer.calib, [j for j in layers if j != i], shape)
        assert scores[i] == pytest.approx(brute, rel=1e-4), i
    assert all(v > 0 for v in norms.values())


def test_each_drop_is_the_one_brute_force_picks_and_resume_is_exact(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    whole = prepare_trim(_recipe(tiny_plan, calib_text), tmp_path / "a", resume=False)
    losses: list[dict[str, float]] = []
    checked = []

    def check(result) -> None:
        losses.append(result.losses)
        drops = whole.drops
        if drops and drops[-1].step == result.step + 1:  # a drop was made after this step: redo it by brute force
            before = [*whole.layers, drops[-1].layer]
            before = [i for i in range(6) if i in before]
            shape = Shape(len(before) - 1, 100, 3)
            brute = {i: calibration_ppl(whole.model, whole.calib, [j for j in before if j != i], shape) for i in before}
            assert drops[-1].layer == min(brute, key=brute.get)
            checked.append(drops[-1].layer)

    train(whole, on_step=check)
    assert [d.depth for d in whole.drops] == [5, 4, 3] and len(checked) == 3
    assert sorted(whole.model.layer_sets) == [3, 4, 5, 6]
    assert set(losses[-1]) <= {"d6-f100-h3", "d5-f100-h3", "d4-f100-h3", "d3-f100-h3"}
    assert "d3-f100-h3" in losses[-1] and "d6-f100-h3" in losses[-1]
    # a run killed after its step-4 checkpoint (which holds the second drop) takes the same steps and drops
    cut = tmp_path / "b"

    def crash(result) -> None:
        if result.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepare_trim(_recipe(tiny_plan, calib_text), cut, resume=False), on_step=crash)
    resumed = prepare_trim(_recipe(tiny_plan, calib_text), cut, resume=True)
    assert resumed.state.step == 4 and [d.layer for d in resumed.drops] == [d.layer for d in whole.drops[:2]]
    assert resumed.step().losses == pytest.approx(losses[4], rel=1e-5, abs=1e-6)
    train(resumed)
    assert [d.to_dict() for d in resumed.drops][2]["layer"] == whole.drops[2].layer
    assert resumed.drops[2].score == pytest.approx(whole.drops[2].score, rel=1e-5)


def test_the_domain_checkpoint_extracts_each_depth_to_a_standard_checkpoint(
    tiny_plan: Path, calib_text: Path, tmp_path: Path
):
    from transformers import AutoModelForCausalLM

    from edgekit.elastic.checkpoint import list_checkpoints
    from edgekit.elastic.source import Source

    trimmer = prepare_trim(_recipe(tiny_plan, calib_text), tmp_path / "run", resume=False)
    train(trimmer)
    result = finish_trim(trimmer, 0, evaluate=False, half=False)
    manifest = json.loads((result.checkpoint / "manifest.json").read_text())
    assert manifest["kind"] == "domain" and manifest["domain"]["name"] == str(calib_text)
    assert [d["layer"] for d in manifest["domain"]["drops"]] == [d.layer for d in trimmer.drops]
    assert len(manifest["domain"]["sha256"]) == 64
    source = Source.resolve(elastic=str(result.checkpoint))
    assert [s.name for s in source.plan.space()] == [f"d{d}-f100-h3" for d in (6, 5, 4, 3)]
    assert source.shape("d4") == Shape(4, 100, 3)
    with pytest.raises(UsageError, match="at full width"):
        source.shape("d4-f50-h2")
    elastic = source.load()
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    for depth in (6, 5, 4, 3):
        shape = Shape(depth, 100, 3)
        out = tmp_path / f"d{depth}"
        source.extract(shape, out)
        hf = AutoModelForCausalLM.from_pretrained(out).eval()
        assert hf.config.num_hidden_layers == depth
        with torch.no_grad():
            want = elastic(ids, shape).logits
            got = hf(ids).logits
        assert (want - got).abs().max().item() < 1e-4, depth
    rows = [e.to_dict() for e in list_checkpoints([tmp_path])]
    assert [(r["kind"], r["domain"], r["origin"]) for r in rows if r["path"] == str(result.checkpoint)] == [
        ("domain", str(calib_text), "user")
    ]


def test_sparse_update_freezes_the_least_important_layers(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    trimmer = prepare_trim(_recipe(tiny_plan, calib_text, "trim.sparse_update=0.5"), tmp_path / "run", resume=False)
    scan = trimmer.first_scan
    assert len(trimmer.frozen) == 3 and trimmer.frozen == sorted(sorted(scan, key=lambda i: (scan[i], i))[:3])
    before = {k: v.detach().clone() for k, v in trimmer.smol.state_dict().items()}
    train(trimmer, stop_at=2)
    for name, value in trimmer.smol.state_dict().items():
        if name.startswith(("A.", "B.")):
            moved = (value - before[name]).flatten(1).abs().amax(1) > 0
            assert not moved[trimmer.frozen].any(), name
            assert moved[[i for i in range(6) if i not in trimmer.frozen]].any(), name


def test_a_run_starts_from_a_checkpoints_plain_lora(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    from edgekit.elastic.checkpoint import load_checkpoint, load_smol

    first = prepare_trim(_recipe(tiny_plan, calib_text, "train.steps=6"), tmp_path / "a", resume=False)
    train(first)
    ckpt = finish_trim(first, 0, evaluate=False, half=False).checkpoint
    second = prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "smol.rank=3"), tmp_path / "b", False)
    want = load_smol(load_checkpoint(ckpt)).state_dict()
    assert second.recipe.smol.rank == 2 and second.init["name"] == ckpt.name  # the checkpoint's config
    assert all(torch.equal(v, want[k]) for k, v in second.smol.state_dict().items())
    assert second.start_score == pytest.approx(calibration_ppl(second.model, second.calib, list(range(6)),
                                                               Shape(6, 100, 3)))  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["trim.depth=6"], "trim.depth 6 is outside 1..5"),
        (["trim.depth=9"], "trim.depth 9 is outside 1..5"),
        (["train.steps=5"], "train.steps (5) must cover 3 drops x trim.interval (2) = 6 steps"),
        (["smol.gated=true"], "one plain LoRA"),
        (["trim.calibration_tokens=100000"], "trimming needs at least"),
        (["train.grid=[d6-w100]"], "train.grid is not for trim recipes"),
        (["trim.granularity=head"], "trim.granularity must be layer or module"),
    ],
)
def test_bad_trim_recipes_are_refused(tiny_plan: Path, calib_text: Path, tmp_path: Path, extra, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_trim(_recipe(tiny_plan, calib_text, *extra), tmp_path / "run", resume=False)


def test_resume_with_another_domain_file_is_refused_with_both_hashes(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    domain = tmp_path / "domain.txt"
    domain.write_text(calib_text.read_text())
    train(prepare_trim(_recipe(tiny_plan, domain), tmp_path / "run", resume=False), stop_at=2)
    domain.write_text(calib_text.read_text() + " more text about something else.")
    with pytest.raises(UsageError, match=r"trained on other data: data.train .*sha256 [0-9a-f]{12}, the run's was"):
        prepare_trim(_recipe(tiny_plan, domain), tmp_path / "run", resume=True)


def test_trim_cli_end_to_end_and_bad_input(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    args = [f"plan={tiny_plan}", f"data.train={calib_text}", "data.seq_len=32", "train.batch_size=2",
            "train.steps=4", "train.warmup=1", "smol.gated=false", "smol.rank=2", "trim.depth=4",
            "trim.interval=2", "trim.calibration_tokens=64", "train.checkpoint_every=2", "train.init=",
            "data.chat=", "data.chat_fraction=0"]  # fmt: skip
    result = cli("elastic", "trim", "--recipe", "smollm2-135m-pydoc", "--out", str(tmp_path / "run"), "--no-eval",
                 "--json", *args)  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [d["depth"] for d in data["drops"]] == [5, 4] and Path(data["checkpoint"]).is_dir()
    again = cli("elastic", "trim", "--out", str(tmp_path / "run"), "--no-eval", *args)
    assert again.code == 2 and "pass --resume" in again.err and len(again.err.strip().splitlines()) == 1
    missing = cli("elastic", "trim", "--out", str(tmp_path / "x"), "--no-eval", args[0], "data.train=/nonexistent.txt",
                  *args[2:])  # fmt: skip
    assert missing.code == 2 and "data.train /nonexistent.txt not found" in missing.err
    not_trim = cli("elastic", "trim", "--recipe", "smollm2-135m", "--out", str(tmp_path / "y"))
    assert not_trim.code == 2 and "not a trim recipe" in not_trim.err


# ---------------------------------------------------------------- trim.granularity=module


def test_block_removal_scores_equal_brute_force(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    from edgekit.elastic.trim import block_removal_scores

    trimmer = prepare_trim(_recipe(tiny_plan, calib_text), tmp_path / "run", resume=False)
    layers, skip = [0, 1, 2, 4, 5], frozenset({(1, "mlp")})  # some blocks already gone
    shape = Shape(4, 100, 3)
    scores, norms = block_removal_scores(trimmer.model.eval(), trimmer.calib, layers, skip, shape)
    assert sorted(scores) == sorted((i, p) for i in layers for p in ("attn", "mlp") if (i, p) not in skip)
    for unit in scores:
        brute = calibration_ppl(trimmer.model, trimmer.calib, layers, shape, skip=skip | {unit})
        assert scores[unit] == pytest.approx(brute, rel=1e-4), unit
    assert all(v > 0 for v in norms.values())


def test_choose_drop_orders_blocks_attention_first_on_a_full_tie():
    assert choose_drop({(2, "mlp"): 3.0, (2, "attn"): 3.0}, {(2, "mlp"): 1.0, (2, "attn"): 1.0}, 0.0)[0] == (2, "attn")


def test_module_trim_drops_two_blocks_per_depth_picked_by_brute_force_and_extracts_exactly(
    tiny_plan: Path, calib_text: Path, tmp_path: Path
):
    from transformers import AutoModelForCausalLM

    from edgekit.elastic.skip import CONFIG_KEY
    from edgekit.elastic.source import Source
    from edgekit.elastic.trim import blocks_after
    from edgekit.engines import get_engine

    trimmer = prepare_trim(_recipe(tiny_plan, calib_text, "trim.granularity=module"), tmp_path / "run", False)
    brute_checked = []

    def check(result) -> None:
        drops = trimmer.drops
        if drops and drops[-1].step == result.step + 1:  # a drop was made after this step: redo both scans
            for k in (len(drops) - 2, len(drops) - 1):
                layers, skip = blocks_after(6, drops[:k])
                shape = Shape(drops[k].depth, 100, 3)
                brute = {(i, p): calibration_ppl(trimmer.model, trimmer.calib, layers, shape, skip=skip | {(i, p)})
                         for i in layers for p in ("attn", "mlp") if (i, p) not in skip}  # fmt: skip
                assert drops[k].dropped == min(brute, key=brute.get)
                brute_checked.append(drops[k].dropped)

    train(trimmer, on_step=check)
    assert len(brute_checked) == 6 and [d.depth for d in trimmer.drops] == [5, 5, 4, 4, 3, 3]
    assert all(d.block in ("attn", "mlp") for d in trimmer.drops)
    result = finish_trim(trimmer, 0, evaluate=False, half=False)
    manifest = json.loads((result.checkpoint / "manifest.json").read_text())
    assert manifest["domain"]["granularity"] == "module"
    source = Source.resolve(elastic=str(result.checkpoint))
    elastic = source.load()
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    for depth in (5, 4, 3):
        layers, skip = source.plan.layer_sets[depth], source.plan.skips_at(depth)
        assert 2 * len(layers) - len(skip) == 2 * depth
        shape = Shape(depth, 100, 3)
        out = tmp_path / f"d{depth}"
        source.extract(shape, out)
        config = json.loads((out / "config.json").read_text())
        assert config["num_hidden_layers"] == len(layers) and len(config.get(CONFIG_KEY, [])) == len(skip)
        with torch.no_grad():
            want = elastic(ids, shape).logits
            # a plain transformers load computes the zeroed blocks; edgekit's torch runtime skips them
            plain = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
            session = get_engine("torch").open(out)
            skipped = session.sequence_logits(ids[0].tolist())
        assert (want - plain).abs().max().item() < 1e-4, depth
        assert (want[0] - skipped).abs().max().item() < 1e-4, depth
        if skip:
            kinds = {type(m).__name__ for layer in session.model.model.layers for m in (layer.self_attn, layer.mlp)}
            assert kinds & {"SkippedAttention", "SkippedMLP"}
    # greedy decoding with the KV cache through skipped blocks equals the logits' argmax, token by token
    from edgekit.engines.base import Sampling

    session = get_engine("torch").open(tmp_path / "d3")
    made = list(session.stream(ids[0].tolist(), Sampling(max_new_tokens=6, temperature=0.0)))
    seq = ids[0].tolist()
    for token in made:
        assert token == int(session.sequence_logits(seq)[-1].argmax())
        seq.append(token)


def test_deploy_refuses_a_runtime_that_cannot_skip_blocks(tiny_plan: Path, calib_text: Path, tmp_path: Path, cli):
    trimmer = prepare_trim(_recipe(tiny_plan, calib_text, "trim.granularity=module", "train.steps=6"),
                           tmp_path / "run", resume=False)  # fmt: skip
    train(trimmer)
    ckpt = finish_trim(trimmer, 0, evaluate=False, half=False).checkpoint
    result = cli("deploy", "--target", "host", "--elastic", str(ckpt), "--runtime", "ort", "--budget", "60%",
                 "--out", str(tmp_path / "dep"), "--dry-run")  # fmt: skip
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "cannot skip" in result.err and "--runtime torch" in result.err and "Traceback" not in result.err


def test_a_run_from_a_domain_checkpoint_goes_on_from_its_depth(tiny_plan: Path, calib_text: Path, tmp_path: Path):
    """train.init naming a domain checkpoint: its depths are the grid from the first step, the next drop comes
    one interval in, and the new checkpoint keeps every depth (the inherited drops first, recorded as such)."""
    first = prepare_trim(_recipe(tiny_plan, calib_text, "trim.depth=4", "train.steps=4"), tmp_path / "a", False)
    train(first)
    ckpt = finish_trim(first, 0, evaluate=False, half=False).checkpoint
    second = prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "train.steps=3"), tmp_path / "b", False)
    assert [d.layer for d in second.drops] == [d.layer for d in first.drops] and second.inherited == 2
    assert [s.depth for s in second.grid] == [6, 5, 4] and second.schedule == [2]
    assert second.start_score == pytest.approx(calibration_ppl(second.model, second.calib, list(range(6)),
                                                               Shape(6, 100, 3)))  # fmt: skip
    train(second, stop_at=2)  # the drop after step 2, then a checkpoint: resume must keep the inherited count
    assert len(second.drops) == 3 and second.drops[-1].step == 2 and second.drops[-1].depth == 3
    resumed = prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "train.steps=3"), tmp_path / "b",
                           resume=True)  # fmt: skip
    assert resumed.inherited == 2 and resumed.made == 1 and [s.depth for s in resumed.grid] == [6, 5, 4, 3]
    train(resumed)
    manifest = json.loads((finish_trim(resumed, 2, False, False).checkpoint / "manifest.json").read_text())
    assert manifest["domain"]["inherited_drops"] == 2 and manifest["domain"]["depths"] == [6, 5, 4, 3]
    assert [d["layer"] for d in manifest["domain"]["drops"]][:2] == [d.layer for d in first.drops]
    # healing only (no drop left to make), and a depth the checkpoint has already passed
    heal = prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "trim.depth=4", "train.steps=1"),
                        tmp_path / "c", False)  # fmt: skip
    assert heal.schedule == [] and [s.depth for s in heal.grid] == [6, 5, 4]
    with pytest.raises(UsageError, match="deeper than train.init's domain checkpoint, already trimmed to depth 4"):
        prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "trim.depth=5"), tmp_path / "d", False)
    with pytest.raises(UsageError, match="dropped by layer; this recipe drops by module"):
        prepare_trim(_recipe(tiny_plan, calib_text, f"train.init={ckpt}", "trim.granularity=module"), tmp_path / "e",
                     False)  # fmt: skip

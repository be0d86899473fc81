"""One-for-all fine-tuning (AmoebaLLM stage 2): SMOL adapters on the frozen, permuted base weights.

Each step samples shapes (the sandwich: largest, smallest, and random ones from the grid), runs the
full model on the data (cross-entropy), and trains every other shape against the full model's
detached logits (in-place distillation) or a frozen original model's cached top-k logits. Losses are
balanced so each shape pulls with the full model's strength: L_i * sg(L_full) / sg(L_i). With
`train.anchor` the full model also learns the original model's cached top-k logits beside the data, so
it (and every shape it teaches) stays near the pretrained model while it specialises.

Everything a step does depends only on (seed, step): the batch, the shapes, the gate noise. So a run
resumed from a checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgekit.artifacts import atomic_dir, read_format_json, sha256_cached, write_json_atomic
from edgekit.elastic.recipe import Recipe
from edgekit.errors import IntegrityError, ResourceError, UsageError, first_line
from edgekit.formats import recipe_identity, tag
from edgekit.shapes import Shape

CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"


@dataclass
class StepResult:
    step: int
    lr: float
    losses: dict[str, float]  # per sampled shape, before balancing
    total: float
    tokens: int
    seconds: float


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0


def distributed() -> tuple[int, int]:
    """(rank, world size) under `torchrun` or `accelerate launch`, initialising the process group once;
    (0, 1) in a plain single process, the default."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def barrier() -> None:
    if distributed()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def leave_distributed() -> None:
    """After the last step, every process leaves the group together, before rank 0 goes on alone (writing and
    measuring the checkpoint): a process that exits with its group still up tears gloo's connections down under
    a peer still using them, which aborts that peer at random (SIGABRT), and a barrier held across rank 0's
    measuring would time out on the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


STATE_FORMAT = tag("edgekit-train-state")


TRAINING_DATA = ("data.train", "data.chat")


def data_files(recipe: Recipe, keys: tuple[str, ...] = TRAINING_DATA) -> dict[str, dict[str, str]]:
    """The recipe's data files by the name they were written with and their sha256: what a run and its
    checkpoint record, so the same files reproduce it and other files are told apart. A hub dataset has
    no hash."""
    found = {}
    for key in keys:
        section, field_name = key.split(".")
        name = getattr(getattr(recipe, section), field_name)
        if name:
            path = Path(recipe.file(key))
            found[key] = {"name": name, "sha256": sha256_cached(path) if path.is_file() else "not a file"}
    return found


def changed_data(recorded: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    """Which recorded data files differ from the recipe's now, said with both hashes."""
    return [
        f"{key} {now[key]['name']} (sha256 {now[key]['sha256'][:12]}, the run's was {was['sha256'][:12]})"
        for key, was in recorded.items()
        if key in now and was.get("sha256") != now[key]["sha256"]
    ]


def sample_shapes(grid: list[Shape], count: int, sandwich: bool, rng: random.Random, params: Callable) -> list[Shape]:
    """The shapes of one step, largest first. With the sandwich: the largest and smallest always, the rest
    drawn without replacement from the others."""
    ordered = sorted(grid, key=params, reverse=True)
    if len(ordered) == 1:  # a trim run before its first drop: only the full model
        return ordered
    if sandwich:
        largest, smallest, middle = ordered[0], ordered[-1], ordered[1:-1]
        picks = rng.sample(middle, min(count - 2, len(middle)))
        return [largest, *sorted(picks, key=params, reverse=True), smallest]
    picks = rng.sample(ordered, min(count, len(ordered)))
    return sorted(picks, key=params, reverse=True)


def balance_weights(losses: list[torch.Tensor], enabled: bool) -> list[torch.Tensor]:
    """Multipliers that rescale each loss to the first's magnitude while keeping its gradient direction."""
    if not enabled:
        return [torch.ones((), device=losses[0].device) for _ in losses]
    ref = losses[0].detach()
    return [ref / loss.detach().clamp_min(1e-8) for loss in losses]


def masked_mean(per_token: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The mean over the tokens whose weight is 1 (all of them when `weight` is None)."""
    if weight is None:
        return per_token.mean()
    w = weight.reshape(-1).to(per_token.dtype)
    return (per_token.reshape(-1) * w).sum() / w.sum().clamp_min(1.0)


def soft_ce(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's softened distribution, per token, mean (over the
    tokens `weight` marks)."""
    t = temperature
    p = F.softmax(teacher.float() / t, dim=-1)
    return masked_mean(-(p * F.log_softmax(student.float() / t, dim=-1)).sum(-1), weight) * t * t


def soft_ce_topk(
    student: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, temperature: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """soft_ce against a teacher kept as its top-k logits (renormalised over those k)."""
    t = temperature
    p = F.softmax(values.float() / t, dim=-1)
    logq = F.log_softmax(student.float() / t, dim=-1).gather(-1, indices.long())
    return masked_mean(-(p * logq).sum(-1), weight) * t * t


def lr_at(step: int, recipe: Recipe) -> float:
    t = recipe.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(
        self, recipe: Recipe, plan: Any, elastic: Any, sequences: Any, grid: list[Shape], run_dir: Path
    ) -> None:
        self.recipe, self.plan, self.model, self.data, self.grid = recipe, plan, elastic, sequences, grid
        self.run_dir = run_dir
        g = elastic.geometry
        self.params = g.non_embedding_params
        self.full = g.full  # the teacher, and the one shape trained on the data itself
        self.smol = elastic.smol
        self.opt = torch.optim.AdamW(self.smol.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
        self.state = RunState()
        self.teacher_cache: dict[str, torch.Tensor] | None = None
        self.device = next(self.smol.parameters()).device
        self.rank, self.world = distributed()
        self.tokenizer: Any = None  # the base model's, set by prepare_run
        self.init: dict[str, str] | None = None  # the checkpoint whose adapters the run started from
        if recipe.train.batch_size % self.world:
            raise UsageError(f"train.batch_size ({recipe.train.batch_size}) must divide among {self.world} processes")
        self.autocast = self.device.type == "cuda" and recipe.train.bf16 != "false" and torch.cuda.is_bf16_supported()
        gc = recipe.train.grad_checkpointing
        elastic.grad_checkpointing = gc == "true" or (gc == "auto" and self.device.type == "cuda")

    @property
    def plan_identity(self) -> tuple[str, str]:
        """The weights and plan a checkpoint belongs to: (model digest, permutations sha256)."""
        return self.plan.model.digest, self.plan.permutations_sha256

    # --------------------------------------------------------------- one step

    def step(self) -> StepResult:
        r = self.recipe.train
        step = self.state.step
        start = time.perf_counter()
        torch.manual_seed(r.seed * 1_000_003 + step)  # gate noise: a function of the step, for exact resume
        rng = random.Random(r.seed * 1_000_003 + step)
        shapes = sample_shapes(self.grid, r.shapes_per_step, r.sandwich, rng, self.params)
        rows = self.rows(step)
        ids = self.data.data[rows].to(self.device)
        mask = self.data.target_mask(rows) if hasattr(self.data, "target_mask") else None
        weight = None if mask is None else mask.to(self.device).float()
        lr = lr_at(step, self.recipe)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.smol.train()
        self.opt.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        teacher: torch.Tensor | None = None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            for shape in shapes:
                logits = self.model(ids, shape).logits[:, :-1]
                if shape == self.full or not r.distill:
                    loss = masked_mean(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                       ids[:, 1:].reshape(-1), reduction="none"), weight)  # fmt: skip
                    if shape == self.full:
                        teacher = logits.detach()
                        if r.anchor > 0:
                            values, indices = self._cached_teacher(step)
                            loss = loss + r.anchor * soft_ce_topk(logits, values, indices, r.temperature, weight)
                elif r.teacher == "frozen":
                    values, indices = self._cached_teacher(step)
                    loss = soft_ce_topk(logits, values, indices, r.temperature, weight)
                else:
                    if teacher is None:  # the full model was not sampled (no sandwich): it still teaches
                        with torch.no_grad():
                            teacher = self.model(ids, self.full).logits[:, :-1]
                    loss = soft_ce(logits, teacher, r.temperature, weight)
                losses.append(loss)
            weights = balance_weights(losses, r.balance)
            total = sum(w * loss for w, loss in zip(weights, losses, strict=True)) / len(losses)
        total.backward()
        if self.world > 1:
            import torch.distributed as dist

            for p in self.smol.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= self.world
        if r.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.smol.parameters(), r.grad_clip)
        self.opt.step()
        self.state.step += 1
        self.state.tokens += ids.numel()
        seconds = time.perf_counter() - start
        self.state.seconds += seconds
        return StepResult(
            step, lr, {s.name: loss.item() for s, loss in zip(shapes, losses, strict=True)}, total.item(), ids.numel(),
            seconds,
        )  # fmt: skip

    # --------------------------------------------------------------- frozen teacher

    def build_teacher_cache(
        self, upto: int | None = None, on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Top-k logits of the original model (no adapters) for the sequences the schedule visits before
        step `upto` (default: the last), computed once. Only those: the corpus can hold far more sequences
        than `steps x batch_size`, and a run paused early must not pay for steps it has not reached. A
        cache on disk is extended with the sequences it lacks, not recomputed."""
        r = self.recipe.train
        path = self.run_dir / "teacher-topk.safetensors"
        from safetensors.torch import load_file, save_file

        needed = torch.unique(torch.cat([self.data.rows(step) for step in range(upto or r.steps)]))
        if self.rank != 0:  # rank 0 computes the cache once; the others read it
            barrier()
        cache = self.teacher_cache
        if cache is None and path.is_file():
            cache = load_file(str(path))
            if "rows" not in cache:  # written before caches recorded their rows: unusable
                cache = None
        have = cache["rows"] if cache is not None else torch.empty(0, dtype=needed.dtype)
        missing = needed[~torch.isin(needed, have)]
        if len(missing) and self.rank != 0:
            raise UsageError(f"{path} does not cover this run's sequences: delete it and start again")
        if len(missing):
            smol, self.model.smol = self.model.smol, None
            values, indices = [], []
            try:
                with torch.inference_mode():
                    for start in range(0, len(missing), 8):
                        batch = self.data.data[missing[start : start + 8]].to(self.device)
                        logits = self.model(batch).logits[:, :-1].float()
                        top = torch.topk(logits, r.teacher_topk, dim=-1)
                        values.append(top.values.half().cpu())
                        indices.append(top.indices.int().cpu())
                        if on_progress:
                            on_progress(min(start + 8, len(missing)), len(missing))
            finally:
                self.model.smol = smol
            if cache is not None:
                values.insert(0, cache["values"])
                indices.insert(0, cache["indices"])
            rows = torch.cat([have, missing])
            order = torch.argsort(rows)  # _cached_teacher looks rows up by binary search
            cache = {"rows": rows[order], "values": torch.cat(values)[order], "indices": torch.cat(indices)[order]}
            tmp = path.with_suffix(".tmp")
            save_file(cache, str(tmp))
            tmp.replace(path)
        self.teacher_cache = cache
        if self.rank == 0:
            barrier()

    def rows(self, step: int) -> torch.Tensor:
        """This process's sequences of the step's batch: all of them, or its share under data parallelism."""
        return self.data.rows(step)[self.rank :: self.world]

    def _cached_teacher(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.teacher_cache is None:
            raise UsageError("train.teacher=frozen and train.anchor need the teacher cache (build_teacher_cache)")
        # the cache holds the visited rows in sorted order
        at = torch.searchsorted(self.teacher_cache["rows"], self.rows(step))
        return (
            self.teacher_cache["values"][at].to(self.device),
            self.teacher_cache["indices"][at].to(self.device),
        )

    # --------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        folder = self.run_dir / CHECKPOINTS / f"step-{self.state.step:06d}"
        with atomic_dir(folder, replace=True) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.smol.state_dict().items()},
                      str(tmp / "smol.safetensors"))  # fmt: skip
            opt = self.opt.state_dict()
            tensors, meta = {}, {"param_groups": opt["param_groups"], "state": {}}
            for pid, st in opt["state"].items():
                meta["state"][str(pid)] = {}
                for key, value in st.items():
                    if torch.is_tensor(value):
                        tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                    else:
                        meta["state"][str(pid)][key] = value
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            write_json_atomic(
                tmp / "state.json",
                {
                    "step": self.state.step,
                    "tokens": self.state.tokens,
                    "seconds": self.state.seconds,
                    "format": STATE_FORMAT,
                    "recipe": recipe_identity(self.recipe.to_dict()),
                    "data": data_files(self.recipe),
                    "model_digest": self.plan_identity[0],
                    "plan_sha256": self.plan_identity[1],
                    "optimizer": meta,
                    **self.extra_state(),
                },
            )
        return folder

    # --------------------------------------------------------------- what subclasses add

    def extra_state(self) -> dict[str, Any]:
        """More of the run's state for its checkpoints (a trim run's drops)."""
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        """Take back what extra_state saved."""

    def after_step(self) -> None:
        """Called after every step, before its checkpoint (a trim run drops a layer here)."""

    def logged_shapes(self) -> list[Shape]:
        """The shapes metrics.csv has a loss column for."""
        return self.grid

    def load_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import load_file

        state = read_format_json(folder / "state.json", "edgekit-train-state", f"checkpoint {folder}",
                                 recipe=self.recipe.to_dict())  # fmt: skip
        recorded = (state.get("model_digest"), state.get("plan_sha256"))
        other_plan = recorded[0] is not None and recorded != self.plan_identity  # older checkpoints lack them
        if state.get("recipe") != recipe_identity(self.recipe.to_dict()) or other_plan:
            raise UsageError(
                f"checkpoint {folder} was made with another recipe or model: start a new run (another --out) "
                "or resume with the recipe that made it"
            )
        changed = changed_data(state.get("data") or {}, data_files(self.recipe))
        if changed:
            raise UsageError(f"checkpoint {folder} was trained on other data: {'; '.join(changed)}: resume with "
                             "the files that made it (--data-dir), or start a new run")  # fmt: skip
        try:
            self.smol.load_state_dict(load_file(str(folder / "smol.safetensors")))
            tensors = load_file(str(folder / "optimizer.safetensors"))
        except Exception as exc:  # safetensors/torch raise several types for a bad file
            raise IntegrityError(f"checkpoint {folder} is corrupt: {first_line(exc)}") from None
        meta = state["optimizer"]
        opt_state: dict[int, dict[str, Any]] = {}
        for pid, st in meta["state"].items():
            opt_state[int(pid)] = dict(st)
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = value.to(self.device)
        self.opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        self.state = RunState(state["step"], state["tokens"], state["seconds"])
        self.restore_extra(state)


def latest_checkpoint(run_dir: Path) -> Path | None:
    folders = sorted(p for p in (run_dir / CHECKPOINTS).glob("step-*") if (p / "state.json").is_file())
    return folders[-1] if folders else None


def append_metrics(run_dir: Path, result: StepResult, shapes_order: list[str]) -> None:
    path = run_dir / METRICS
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["step", "lr", "total", "tokens", "seconds", *(f"loss_{s}" for s in shapes_order)])
        writer.writerow(
            [result.step, f"{result.lr:.3e}", f"{result.total:.5f}", result.tokens, f"{result.seconds:.3f}",
             *(f"{result.losses[s]:.5f}" if s in result.losses else "" for s in shapes_order)]
        )  # fmt: skip


def trim_metrics(run_dir: Path, step: int) -> None:
    """Drop log rows of steps at or after `step`: a run killed between checkpoints logged steps that its
    resume takes again, and the log must not hold them twice."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) < step]
    if len(kept) < len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)


def out_of_memory(exc: BaseException) -> ResourceError:
    return ResourceError(
        f"out of memory while training ({first_line(exc)[:80]}): lower train.batch_size, data.seq_len "
        "or train.shapes_per_step"
    )


def resolve_device(choice: str) -> str:
    import os

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ResourceError("train.device=cuda but no CUDA device is available")
    if choice == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return choice


def training_shapes(plan: Any, t: Any) -> list[Shape]:
    """The shapes a run samples from: the recipe's grid, the plan's grid or its whole space, without those
    below `min_params` of the full model's non-embedding parameters (the full model always stays)."""
    named = ",".join(t.grid) if t.grid and t.grid != ["space"] else None
    shapes = plan.space() if t.grid == ["space"] else plan.grid(named)
    if t.min_params > 0:
        g = plan.geometry
        floor = t.min_params * g.non_embedding_params(plan.full)
        shapes = [s for s in shapes if g.non_embedding_params(s) >= floor or s == plan.full]
    return shapes


def prepare_run(recipe: Recipe, run_dir: Path, resume: bool) -> Trainer:
    """Load the plan, weights, data and adapters; restore the latest checkpoint when resuming."""
    recipe.check_files(TRAINING_DATA)
    from transformers import AutoTokenizer

    from edgekit.elastic.base_model import base_folder, load_elastic
    from edgekit.elastic.data import token_stream_and_mask
    from edgekit.elastic.plan import load_plan

    plan = load_plan(recipe.plan)
    grid = training_shapes(plan, recipe.train)
    if len(grid) < 2 and recipe.train.sandwich:
        raise UsageError("the sandwich needs at least two shapes in train.grid (train.sandwich=false for one shape)")
    if len(grid) == 1 and recipe.train.distill and recipe.train.teacher == "inplace" and grid[0] != plan.full:
        raise UsageError("one shape cannot distill in place (the full model is not trained): use train.teacher=frozen")
    existing = existing_run(run_dir, resume)
    device = resolve_device(recipe.train.device)
    tokenizer = AutoTokenizer.from_pretrained(base_folder(plan, recipe.model))
    d = recipe.data
    stream, mask = token_stream_and_mask(recipe.file("data.train"), tokenizer, d.format, d.max_tokens)
    sequences = training_sequences(recipe, tokenizer, stream, mask)
    smol, init = initial_adapters(recipe, plan)
    elastic = load_elastic(plan, recipe.model, device)
    elastic.smol = smol.to(device)
    trainer = Trainer(recipe, plan, elastic, sequences, grid, run_dir)
    trainer.init = init
    return open_run(trainer, tokenizer, existing)


def initial_adapters(recipe: Recipe, plan: Any) -> tuple[Any, dict[str, str] | None]:
    """The adapters a run starts from: fresh ones of the recipe's smol config, or with `train.init` those of an
    elastic checkpoint with one plain LoRA on the same plan's weights (the recipe's smol section becomes its
    config); and what the start was, for the manifest."""
    from edgekit.elastic.checkpoint import load_checkpoint, load_smol
    from edgekit.elastic.smol import Smol, SmolConfig

    if not recipe.train.init:
        torch.manual_seed(recipe.train.seed)
        return Smol(plan.geometry, recipe.smol, plan.width.grid), None
    ckpt = load_checkpoint(recipe.train.init)
    if ckpt.smol_config.gated:
        raise UsageError(
            f"train.init {ckpt.name} has gated SMOL experts, one set per shape; a run starts from one plain LoRA "
            "(a checkpoint trained with smol.gated=false) or from fresh adapters (train.init=)"
        )
    if (ckpt.plan.model.digest, ckpt.plan.permutations_sha256) != (plan.model.digest, plan.permutations_sha256):
        raise UsageError(f"train.init {ckpt.name} was trained on other weights or permutations than plan "
                         f"{plan.name}: set plan={ckpt.path / 'plan'}")  # fmt: skip
    recipe.smol = SmolConfig(**ckpt.smol_config.to_dict())
    init = {"name": ckpt.name, "smol_sha256": ckpt.manifest["files"]["smol.safetensors"]["sha256"]}
    return load_smol(ckpt).train(), init


def existing_run(run_dir: Path, resume: bool) -> Path | None:
    """The run folder's latest checkpoint when resuming; a run already there without --resume is refused."""
    existing = latest_checkpoint(run_dir) if run_dir.exists() else None
    if existing is not None and not resume:
        raise UsageError(f"{run_dir} already holds a run ({existing.name}): pass --resume, or choose another --out")
    return existing


def training_sequences(recipe: Recipe, tokenizer: Any, stream: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
    """The data's sequences in their seeded order, with the chat replies mixed into every batch when named.
    `mask` marks the replies of instruction/response data: with data.chat_loss=replies only they are targets."""
    from edgekit.elastic.data import Sequences, token_stream_and_mask

    d = recipe.data
    replies = d.chat_loss == "replies"
    sequences = Sequences(stream, d.seq_len, recipe.train.batch_size, recipe.train.seed, d.train,
                          mask if replies else None)  # fmt: skip
    if d.chat:
        chat, chat_mask = token_stream_and_mask(recipe.file("data.chat"), tokenizer, "jsonl", d.max_tokens)
        extra = Sequences(chat, d.seq_len, 1, recipe.train.seed + 1, d.chat, chat_mask if replies else None)
        sequences = sequences.mixed(extra, d.chat_fraction)
    return sequences


def open_run(trainer: Trainer, tokenizer: Any, existing: Path | None) -> Trainer:
    """Restore the latest checkpoint, if any, and record the recipe in the run folder."""
    import yaml

    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer.tokenizer = tokenizer
    if existing is not None:
        trainer.load_checkpoint(existing)
    if trainer.rank == 0:
        trim_metrics(trainer.run_dir, trainer.state.step)
        (trainer.run_dir / "recipe.yaml").write_text(yaml.safe_dump(trainer.recipe.to_dict(), sort_keys=False))
    return trainer


def train(
    trainer: Trainer,
    on_step: Callable[[StepResult], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    stop_at: int | None = None,
) -> RunState:
    """Train to the recipe's last step, or pause at `stop_at` (a checkpoint) of the same schedule:
    equal-budget comparisons stop several runs at one step without changing their learning rate."""
    r = trainer.recipe.train
    last = min(r.steps, stop_at) if stop_at else r.steps
    if r.teacher == "frozen" or r.anchor > 0:
        label = "caching the original model's top-k logits"
        progress = (lambda done, total: on_stage(f"{label}: {done}/{total} sequences")) if on_stage else None
        trainer.build_teacher_cache(upto=last, on_progress=progress)
    order = [s.name for s in sorted(trainer.logged_shapes(), key=trainer.params, reverse=True)]
    try:
        while trainer.state.step < last:
            result = trainer.step()
            if trainer.rank == 0:
                append_metrics(trainer.run_dir, result, order)
            trainer.after_step()
            if trainer.rank == 0 and on_step:
                on_step(result)
            if trainer.state.step % r.checkpoint_every == 0 or trainer.state.step == last:
                if trainer.rank == 0:
                    trainer.save_checkpoint()
                barrier()
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(exc) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            raise out_of_memory(exc) from None
        raise
    return trainer.state


@dataclass
class RunResult:
    checkpoint: Path
    training: dict[str, Any]
    accuracy: dict[str, Any] | None
    predictor: Any = None  # the checkpoint's accuracy predictor, refitted on its own SMOL weights
    chat_predictor: Any = None  # and its chat predictor, when the recipe names chat prompts
    notes: list[str] = field(default_factory=list)


TABLE_MAX = 24  # trained shapes up to this many are all in the accuracy table; a space gets TABLE_SHAPES of them
TABLE_SHAPES = 7


def finish(
    trainer: Trainer, start_step: int, evaluate: bool, half: bool, on_shape: Callable[[str], None] | None = None
) -> RunResult:
    """The run's elastic checkpoint (RUN/elastic), with its predictors and accuracy table when `evaluate`: what
    rank 0 writes when training ends. It records the training summary and every data file of the recipe by name
    and hash."""
    from edgekit.elastic.checkpoint import write_checkpoint
    from edgekit.elastic.recipe import DATA_KEYS

    r, state = trainer.recipe, trainer.state
    training = {
        "steps": state.step,
        "tokens": state.tokens,
        "seconds": round(state.seconds, 1),
        "device": str(trainer.device),
        "resumed_from": start_step or None,
        "init": trainer.init,
        "data": data_files(r, tuple(f"{a}.{b}" for a, b in DATA_KEYS)),
    }
    out = trainer.run_dir / "elastic"
    write_checkpoint(out, trainer.plan, trainer.smol, r.to_dict(), training, None, half=half, force=True)
    result = RunResult(out, training, None)
    if evaluate:
        evaluate_checkpoint(result, trainer.grid, r.eval_settings(), on_shape)
    return result


def evaluate_checkpoint(
    result: RunResult, trained: list[Shape], settings: Any, on_shape: Callable[[str], None] | None = None
) -> None:
    """Measure a written checkpoint as it ships (fp16 SMOL included): its text predictor (and chat predictor,
    with the reference replies it was fitted on, when the settings name chat prompts), then its accuracy table
    on the trained shapes, or on TABLE_SHAPES of them spread along the predicted frontier when they are a whole
    space. Training moves every shape's figures, so the plan's stage-1 predictor no longer describes them."""
    from edgekit.elastic.accuracy import evaluate_shapes, table_shapes
    from edgekit.elastic.checkpoint import set_accuracy
    from edgekit.elastic.predictor import CHAT_PROMPTS, fit_chat_source
    from edgekit.elastic.source import Source

    source = Source.resolve(elastic=str(result.checkpoint))
    if settings.text and settings.predictor_tokens:
        refit_predictor(result, Path(settings.text), settings.predictor_tokens, on_shape)
    chat = None
    if settings.chat_prompts:
        from edgekit.evaluation.chat import reference_for

        ref = reference_for(source.base_folder(), source.plan.model.digest, Path(settings.chat_prompts),
                            min(CHAT_PROMPTS, settings.chat_limit), settings.chat_tokens)  # fmt: skip
        chat = fit_chat_source(source, ref, on_shape=on_shape)
        source.save_predictor(chat)
        source.save_chat_reference(ref)
        result.chat_predictor = chat
    shapes = trained
    if len(trained) > TABLE_MAX:
        ranking = chat or result.predictor
        shapes = table_shapes(source.plan, ranking, trained, TABLE_SHAPES) if ranking else source.plan.grid()
    accuracy = evaluate_shapes(source.load(), source.tokenizer(), source.plan, shapes, settings, on_shape)
    set_accuracy(source.checkpoint, accuracy)
    result.accuracy = accuracy


def refit_predictor(result: RunResult, text: Path, tokens: int, on_shape: Callable[[str], None] | None) -> None:
    """Fit the new checkpoint's accuracy predictor on the weights as written (fp16 SMOL included): training
    moves every shape's perplexity, so the plan's stage-1 predictor no longer describes them."""
    from edgekit.elastic.predictor import fit_source
    from edgekit.elastic.source import Source

    source = Source.resolve(elastic=str(result.checkpoint))
    try:
        result.predictor = fit_source(source, text, tokens, on_shape=on_shape)
    except UsageError as exc:
        result.notes.append(f"no accuracy predictor: {exc}")
        return
    source.save_predictor(result.predictor)

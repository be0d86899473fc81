"""The input-adaptive router: from a prompt's features, each menu shape's predicted loss on the full model's
reply (its mean per-token NLL, the log of that prompt's chat_ppl), by one ridge regression per shape on a
small projection of the features (standardised, then the top principal components, plus the log length).

A router belongs to one checkpoint and one menu: it records the checkpoint's name, SMOL hash and plan, and
loading it for another is refused. It also keeps its predictions for its own prompts, on which any target's
policy is calibrated (edgekit.routing.policy) without running the features again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import IntegrityError
from edgekit.formats import tag

FORMAT = tag("edgekit-router")
COMPONENTS = 8  # principal components of the pooled hidden state kept as features
RIDGE = 1.0  # on standardised features; the folds below say whether it over- or under-fits
FOLDS = 5
ROUTER_FILE = "router.json"
WEIGHTS_FILE = "router.safetensors"
FEATURES_DIR = "features"


@dataclass
class Router:
    menu: list[str]  # shape names, fastest first is not assumed: each has its own column
    identity: dict[str, Any]  # checkpoint name, smol sha256, plan permutations sha256
    mean: np.ndarray  # [F] feature means
    scale: np.ndarray  # [F] feature standard deviations
    components: np.ndarray  # [F - 1, C] principal axes of the pooled hidden state (the length is kept apart)
    weights: np.ndarray  # [S, C + 2]: per shape, the projection's, the log length's and the intercept
    calibration: np.ndarray  # [n, S] cross-validated predictions on the router's own prompts
    stats: dict[str, Any] = field(default_factory=dict)

    def design(self, features: np.ndarray) -> np.ndarray:
        """[n, F] raw features -> [n, C + 2] the regression's inputs."""
        z = (np.atleast_2d(features) - self.mean) / self.scale
        return np.hstack([z[:, :-1] @ self.components, z[:, -1:], np.ones((z.shape[0], 1))])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """[n, S] predicted mean reply NLL of each menu shape."""
        return self.design(features) @ self.weights.T

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "menu": self.menu, "identity": self.identity, "stats": self.stats,
                "components": int(self.components.shape[1]), "prompts": int(self.calibration.shape[0])}  # fmt: skip

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v, dtype=np.float64)
                for k, v in asdict(self).items() if isinstance(v, np.ndarray)}  # fmt: skip


def fit(features: np.ndarray, loss: np.ndarray, menu: list[str], identity: dict[str, Any],
        components: int = COMPONENTS, ridge: float = RIDGE) -> Router:  # fmt: skip
    """A router from routing data: features [n, F] (the pooled hidden state, then the log length) and the menu
    shapes' losses [n, S]. Its calibration predictions and its figures come from FOLDS-fold cross-validation, so
    they are what the router does on prompts it was not fitted on."""
    n = features.shape[0]
    if n < 2 * FOLDS:
        raise ValueError(f"{n} prompts are too few to fit and check a router (at least {2 * FOLDS})")
    folds = np.arange(n) % FOLDS
    held_out = np.zeros_like(loss)
    for k in range(FOLDS):
        part = _fit(features[folds != k], loss[folds != k], menu, identity, components, ridge)
        held_out[folds == k] = part.predict(features[folds == k])
    router = _fit(features, loss, menu, identity, components, ridge)
    router.calibration = held_out
    router.stats = fit_stats(held_out, loss)
    return router


def _fit(features: np.ndarray, loss: np.ndarray, menu: list[str], identity: dict[str, Any], components: int,
         ridge: float) -> Router:  # fmt: skip
    mean, scale = features.mean(0), features.std(0) + 1e-8
    z = (features - mean) / scale
    _, _, vt = np.linalg.svd(z[:, :-1], full_matrices=False)
    axes = vt[: min(components, vt.shape[0])].T
    router = Router(menu, identity, mean, scale, axes, np.zeros((len(menu), axes.shape[1] + 2)), np.zeros((0, 0)))
    x = router.design(features)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    router.weights = np.linalg.solve(x.T @ x + penalty, x.T @ loss).T
    return router


def fit_stats(pred: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """How well held-out predictions rank shapes per prompt: the share of prompts where the predicted best shape
    is the actual best, the loss given up against that oracle, and each shape's error and rank correlation."""
    best, picked = loss.argmin(1), pred.argmin(1)
    per_shape = {}
    for s in range(loss.shape[1]):
        per_shape[str(s)] = {"mae": round(float(np.abs(pred[:, s] - loss[:, s]).mean()), 4),
                             "spearman": round(spearman(pred[:, s], loss[:, s]), 4)}  # fmt: skip
    return {"prompts": int(loss.shape[0]), "best_found": round(float((best == picked).mean()), 4),
            "regret": round(float((loss[np.arange(len(loss)), picked] - loss.min(1)).mean()), 4),
            "per_shape": per_shape}  # fmt: skip


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def save(router: Router, extractor: Any, out: Path) -> Path:
    """router.json, router.safetensors and the feature extractor, written atomically with a manifest of hashes."""
    from safetensors.numpy import save_file

    from edgekit.artifacts import atomic_dir, hash_tree, write_manifest

    with atomic_dir(out, replace=True) as tmp:
        save_file(router.tensors(), str(tmp / WEIGHTS_FILE))
        extractor.save(tmp / FEATURES_DIR)
        write_manifest(tmp / ROUTER_FILE, {**router.to_json(), "files": hash_tree(tmp)})
    return out


def load(folder: Path, identity: dict[str, Any] | None = None) -> tuple[Router, Any]:
    """A router and its feature extractor, every file checked against its hash; with `identity`, refused unless
    it was fitted on that checkpoint."""
    from safetensors.numpy import load_file

    from edgekit.artifacts import read_format_json, verify_files
    from edgekit.routing.features import FeatureExtractor

    data = read_format_json(folder / ROUTER_FILE, "edgekit-router", f"router {folder}")
    verify_files(folder, data["files"], f"router {folder}")
    if identity is not None and data["identity"] != identity:
        raise IntegrityError(f"router {folder} was fitted on {describe(data['identity'])}, not on "
                             f"{describe(identity)}: fit one with `edgekit elastic router`")  # fmt: skip
    t = load_file(str(folder / WEIGHTS_FILE))
    router = Router(data["menu"], data["identity"], t["mean"], t["scale"], t["components"], t["weights"],
                    t["calibration"], data.get("stats", {}))  # fmt: skip
    return router, FeatureExtractor.load(folder / FEATURES_DIR)


def describe(identity: dict[str, Any]) -> str:
    return f"checkpoint {identity.get('checkpoint')} (SMOL {str(identity.get('smol_sha256'))[:12]})"

"""The track projector: from MiniLM text space into ALS behavior space.

It maps a track's text vector to its ALS item factor. Trained on warm tracks, it gives every
cold track (no playlist history) a behavior vector. (A title's query in behavior space comes
from the nearest training titles' playlists instead: see :meth:`Retriever.title_query`.)

It is a small MLP (``text_dim -> hidden -> behavior_dim``) fitted with a cosine + MSE loss,
weighted by log-popularity (factors of tracks seen once are noise). ``fit_projector`` holds out
a share of the pairs and reports the fit on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectorConfig:
    """Projector MLP and its training."""

    hidden: int = 512  # width of the hidden layer
    epochs: int = 12  # passes over the training pairs
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-4
    holdout: float = 0.1  # share of pairs held out for the fit report
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"ProjectorConfig: hidden={self.hidden}, epochs={self.epochs}, "
                f"batch_size={self.batch_size}: expected all >= 1"
            )
        if not 0 <= self.holdout < 1:
            raise ValueError(f"ProjectorConfig.holdout={self.holdout}: expected 0 <= x < 1")


class Projector(nn.Module):
    """``text (…, text_dim) -> behavior (…, behavior_dim)``."""

    def __init__(self, text_dim: int, behavior_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, behavior_dim)
        )

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.net(text)

    @torch.inference_mode()
    def project(self, text: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Numpy in (float16 or float32), numpy out (float32), batched."""
        self.eval()
        out = [
            self(torch.from_numpy(np.asarray(text[i : i + batch], np.float32))).numpy()
            for i in range(0, len(text), batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.net[-1].out_features), np.float32)


def _loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    cos = nn.functional.cosine_similarity(pred, target, dim=-1)
    mse = ((pred - target) ** 2).mean(dim=-1) / target.pow(2).mean().clamp_min(1e-8)
    return (weight * (1.0 - cos + mse)).sum() / weight.sum()


def fit_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean cosine and R^2 of predicted vs true behavior vectors."""
    pn = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-8)
    tn = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-8)
    resid = ((pred - target) ** 2).sum()
    total = ((target - target.mean(axis=0)) ** 2).sum()
    return {"cosine": float((pn * tn).sum(axis=1).mean()), "r2": float(1.0 - resid / total)}


def fit_projector(
    text: np.ndarray,
    behavior: np.ndarray,
    weight: np.ndarray | None = None,
    config: ProjectorConfig | None = None,
) -> tuple[Projector, dict]:
    """Fit a projector on (text, behavior) pairs.

    Args:
        text: (n, text_dim) float32 text vectors.
        behavior: (n, behavior_dim) float32 targets.
        weight: (n,) per-pair weights (default 1).
        config: training settings.

    Returns:
        The projector (eval mode) and a report: held-out cosine / R^2, and the same for the
        mean-vector baseline, so the report says what the text adds.
    """
    config = config or ProjectorConfig()
    if len(text) != len(behavior) or len(text) < 10:
        raise ValueError(
            f"fit_projector: {len(text)} text vectors and {len(behavior)} behavior vectors; "
            "expected the same number, at least 10"
        )
    weight = np.ones(len(text), np.float32) if weight is None else weight.astype(np.float32)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(text))
    n_hold = int(len(text) * config.holdout)
    hold, fit = order[:n_hold], order[n_hold:]
    torch.manual_seed(config.seed)
    model = Projector(text.shape[1], behavior.shape[1], config.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    X, Y, W = (torch.from_numpy(np.ascontiguousarray(a)) for a in (text, behavior, weight))
    steps = config.epochs * max(1, int(np.ceil(len(fit) / config.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    model.train()
    for _ in range(config.epochs):
        perm = torch.from_numpy(rng.permutation(fit))
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            loss = _loss(model(X[idx]), Y[idx], W[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    report = {"pairs": len(fit), "held_out": int(n_hold)}
    if n_hold:
        pred = model.project(text[hold])
        report["held_out_fit"] = fit_metrics(pred, behavior[hold])
        mean = np.broadcast_to(behavior[fit].mean(axis=0), behavior[hold].shape)
        report["mean_vector_fit"] = fit_metrics(np.ascontiguousarray(mean), behavior[hold])
    log.info("projector fit: %s", report)
    return model, report

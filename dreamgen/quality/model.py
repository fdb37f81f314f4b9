"""The learned quality model: will this trajectory accomplish its instruction in the real world?

``QualityModel.score(batch) -> (prob[N], value[N, T])``: for each episode the probability that it
succeeds in the real simulator, and a per-step progress/value estimate in [0, 1].

Architecture: a per-step MLP encodes ``[normalised obs_t, normalised Δobs_t, action_t, t / 150,
instruction embedding]`` into ``h_t`` (episodes packed end to end, never padded); the value head reads
each ``h_t``; the episode head reads the episode's mean, max and last ``h_t``. Targets: the episode's
real outcome (BCE, classes balanced), and ``outcome × γ^(T_s − t)`` per step (``T_s`` = the first real
success frame, else the last frame).

Trained by ``fit_quality`` on real episodes (real success labels) and on audited dreams (their real
replay outcome). ``cross_fit`` gives out-of-fold probabilities, so thresholds are never chosen on
scores a model was trained on. Checkpoint: ``model.safetensors`` + ``quality.json``, never a pickle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamgen.nets import mlp_blocks
from dreamgen.scores import auc  # noqa: F401  (the quality model's AUC: jobs.train_quality, tests)

STEP_SCALE = 150.0  # t / STEP_SCALE is the time feature


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    hidden: int = 128  # width of the per-step encoder and the episode head
    layers: int = 2  # hidden layers of the per-step encoder
    lr: float = 1.0e-3  # AdamW learning rate
    weight_decay: float = 1.0e-4
    epochs: int = 40  # passes over the training episodes
    batch_size: int = 32  # episodes per gradient step
    gamma: float = 0.97  # discount of the per-step progress target
    value_weight: float = 0.5  # weight of the per-step value loss next to the episode loss

    def __post_init__(self) -> None:
        from dreamgen.errors import ConfigError

        for name in ("hidden", "layers", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"quality.{name}={getattr(self, name)}; must be >= 1")
        if self.lr <= 0 or not 0 < self.gamma <= 1 or self.value_weight < 0:
            raise ConfigError(f"quality.lr={self.lr} must be > 0, quality.gamma={self.gamma} in (0, 1], "
                              f"quality.value_weight={self.value_weight} >= 0")


@dataclasses.dataclass
class QualityData:
    """Labelled episodes: ``obs[i]`` ``[T_i, O]``, ``action[i]`` ``[T_i, A]``, ``cond[N, C]``, ``label[N]``
    (real success), ``success_step[N]`` (first real success frame, -1 = unknown/none), ``source[N]``
    (real | dream) and ``episode_id[N]``."""

    obs: list[np.ndarray]
    action: list[np.ndarray]
    cond: np.ndarray
    label: np.ndarray
    success_step: np.ndarray
    source: np.ndarray
    episode_id: np.ndarray

    def __len__(self) -> int:
        return len(self.obs)

    def subset(self, index: np.ndarray) -> QualityData:
        return QualityData([self.obs[i] for i in index], [self.action[i] for i in index], self.cond[index],
                           self.label[index], self.success_step[index], self.source[index], self.episode_id[index])


class _Net(nn.Module):
    def __init__(self, step_dim: int, cond_dim: int, hidden: int, layers: int):
        super().__init__()
        self.step_dim = step_dim
        self.encoder = nn.Sequential(*mlp_blocks(step_dim + cond_dim, hidden, layers, nn.SiLU))
        self.value = nn.Linear(hidden, 1)
        self.head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[N,F]``: the per-step features of ``B`` episodes packed end to end (``lengths[B]`` steps each),
        ``cond[B,C]`` their instruction embeddings -> episode logit ``[B]``, per-step value logit ``[N]``.

        The encoder's first layer reads ``[step features, instruction]``; the instruction is constant over an
        episode, so its part of that layer is computed once per episode and added as a bias. Steps are
        packed, not padded: the encoder only ever sees real steps, and the pooling runs per episode.
        """
        episode = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        first: nn.Linear = self.encoder[0]  # type: ignore[assignment]
        bias = nn.functional.linear(cond, first.weight[:, self.step_dim:], first.bias)
        h = self.encoder[1:](nn.functional.linear(x, first.weight[:, :self.step_dim]) + bias[episode])
        mean = h.new_zeros(len(lengths), h.shape[1]).index_add(0, episode, h) / lengths[:, None]
        peak = h.new_full((len(lengths), h.shape[1]), float("-inf")).scatter_reduce(
            0, episode[:, None].expand_as(h), h, "amax")
        last = h[lengths.cumsum(0) - 1]
        return self.head(torch.cat([mean, peak, last], -1))[:, 0], self.value(h)[:, 0]


class QualityModel:
    """A trained quality model; ``score`` batches and pads episodes itself."""

    def __init__(self, config: QualityConfig, obs_mean: np.ndarray, obs_std: np.ndarray, delta_std: np.ndarray,
                 action_dim: int, cond_dim: int, info: dict[str, Any] | None = None):
        self.config = config
        self.obs_mean, self.obs_std = obs_mean.astype(np.float32), obs_std.astype(np.float32)
        self.delta_std = delta_std.astype(np.float32)
        self.action_dim, self.cond_dim = action_dim, cond_dim
        self.info = dict(info or {})
        self.step_dim = 2 * len(obs_mean) + action_dim + 1
        self.net = _Net(self.step_dim, cond_dim, config.hidden, config.layers)

    @classmethod
    def for_data(cls, data: QualityData, config: QualityConfig) -> QualityModel:
        obs = np.concatenate(data.obs)
        delta = np.concatenate([np.diff(o, axis=0, prepend=o[:1]) for o in data.obs])
        return cls(config, obs.mean(0), np.maximum(obs.std(0), 1e-2), np.maximum(delta.std(0), 1e-3),
                   data.action[0].shape[1], data.cond.shape[1])

    def features(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Per-step inputs ``[T, F]`` of one episode (the instruction goes to the network separately)."""
        t = np.arange(len(obs), dtype=np.float32)[:, None] / STEP_SCALE
        delta = np.diff(obs, axis=0, prepend=obs[:1]) / self.delta_std
        return np.concatenate([(obs - self.obs_mean) / self.obs_std, np.clip(delta, -50, 50), action, t],
                              1).astype(np.float32)

    @staticmethod
    def batch(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Episodes' features packed end to end: ``x[N,F]`` and ``lengths[B]``."""
        lengths = [len(f) for f in features]
        if min(lengths) < 1:
            raise ValueError("the quality model scores episodes of at least one step")
        return torch.from_numpy(np.concatenate(features)), torch.as_tensor(lengths)

    @torch.no_grad()
    def score(self, obs: Sequence[np.ndarray], action: Sequence[np.ndarray], cond: np.ndarray,
              batch_size: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
        """Real-success probability ``[N]`` and per-step value ``[T_i]`` of each episode."""
        self.net.eval()
        probs, values = [], []
        for start in range(0, len(obs), batch_size):
            stop = start + batch_size
            x, lengths = self.batch([self.features(o, a) for o, a in zip(obs[start:stop], action[start:stop],
                                                                          strict=True)])
            logit, value = self.net(x, torch.as_tensor(cond[start:stop], dtype=torch.float32), lengths)
            probs.append(torch.sigmoid(logit).numpy())
            values += [v.numpy() for v in torch.sigmoid(value).split(lengths.tolist())]
        return (np.concatenate(probs) if probs else np.zeros(0, np.float32)), values

    def save(self, path: str | Path) -> None:
        from dreamgen.checkpoints import write_checkpoint

        write_checkpoint(path, self.net.state_dict(), {
            "config": dataclasses.asdict(self.config), "obs_mean": self.obs_mean.tolist(),
            "obs_std": self.obs_std.tolist(), "delta_std": self.delta_std.tolist(),
            "action_dim": self.action_dim, "cond_dim": self.cond_dim, "info": self.info}, "quality.json")

    @classmethod
    def load(cls, path: str | Path) -> QualityModel:
        from dreamgen.checkpoints import loading, read_checkpoint

        make = "train one with `dreamgen train-quality`"
        spec, tensors = read_checkpoint(path, "quality.json", "quality model", make)
        with loading(path, "quality model", make):
            model = cls(QualityConfig(**spec["config"]), np.asarray(spec["obs_mean"]), np.asarray(spec["obs_std"]),
                        np.asarray(spec["delta_std"]), spec["action_dim"], spec["cond_dim"], spec["info"])
            model.net.load_state_dict(tensors)
        return model


def _targets(data: QualityData, index: np.ndarray, gamma: float) -> torch.Tensor:
    """Per-step progress targets of the episodes ``index``, packed like ``QualityModel.batch``: ``gamma``
    to the steps left until success on episodes that really succeed, 0 on the others."""
    out = []
    for i in index:
        length = len(data.obs[i])
        target = np.zeros(length, np.float32)
        if data.label[i]:
            done = int(data.success_step[i]) if data.success_step[i] >= 0 else length - 1
            target[:] = gamma ** np.maximum(done - np.arange(length), 0)
        out.append(target)
    return torch.from_numpy(np.concatenate(out))


def fit_quality(data: QualityData, config: QualityConfig, *, seed: int, info: dict[str, Any] | None = None,
                on_epoch: Callable[[int, float], None] | None = None) -> QualityModel:
    """Fit a quality model on ``data``; deterministic given ``seed``."""
    if len(data) == 0 or data.label.all() or not data.label.any():
        from dreamgen.errors import ConfigError

        raise ConfigError(f"the quality model needs real successes and failures to learn from; got "
                          f"{int(data.label.sum())} successes among {len(data)} episodes (collect play episodes, "
                          "or audit dreams first with `dreamgen audit`)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = QualityModel.for_data(data, config)
    model.info.update(info or {})
    positives = float(data.label.mean())
    pos_weight = torch.tensor((1 - positives) / positives)
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(data) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    features = [model.features(o, a) for o, a in zip(data.obs, data.action, strict=True)]
    cond = torch.as_tensor(data.cond, dtype=torch.float32)
    model.net.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(data), generator=generator).numpy()
        total = 0.0
        for start in range(0, len(data), config.batch_size):
            index = order[start:start + config.batch_size]
            x, lengths = model.batch([features[i] for i in index])
            logit, value = model.net(x, cond[index], lengths)
            label = torch.as_tensor(data.label[index], dtype=torch.float32)
            loss = nn.functional.binary_cross_entropy_with_logits(logit, label, pos_weight=pos_weight)
            step_loss = nn.functional.binary_cross_entropy_with_logits(value, _targets(data, index, config.gamma))
            loss = loss + config.value_weight * step_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach()) * len(index)
        if on_epoch is not None:
            on_epoch(epoch, total / len(data))
    model.net.eval()
    return model


def cross_fit(data: QualityData, config: QualityConfig, *, seed: int, folds: int) -> np.ndarray:
    """Out-of-fold success probabilities ``[N]``: each episode scored by a model that never saw it."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(data), np.int64)
    for cls in (False, True):  # stratified: every training split holds both classes
        rows = np.flatnonzero(data.label == cls)
        fold[rows] = rng.permutation(np.arange(len(rows)) % folds)
    oof = np.full(len(data), np.nan, np.float32)
    for k in range(folds):
        train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = fit_quality(data.subset(train), config, seed=seed + k)
        held_data = data.subset(held)
        oof[held] = model.score(held_data.obs, held_data.action, held_data.cond)[0]
    return oof


def calibration(score: np.ndarray, label: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and the reliability table (equal-width bins)."""
    score, label = np.asarray(score, float), np.asarray(label, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(score, edges) - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(score[inside].mean() - label[inside].mean())
            ece += inside.mean() * gap
            table.append({"bin": [float(edges[b]), float(edges[b + 1])], "n": int(inside.sum()),
                          "mean_score": float(score[inside].mean()), "success_rate": float(label[inside].mean())})
    return {"brier": float(((score - label) ** 2).mean()) if len(score) else float("nan"),
            "ece": float(ece), "table": table}

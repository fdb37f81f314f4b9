"""The dream filter: physical checks + the learned quality score -> a verdict and a reason per dream.

Checks run in a fixed order; the first that fails is the reason (``REASONS``), a dream passing all of
them is accepted with reason ``passed``:

- ``non-finite``: a NaN/inf state or action, or a rollout that ended non-finite;
- ``action-bounds``: an action outside [-1, 1];
- ``out-of-support``: a state outside the per-dim range of real data, widened by ``support_margin`` × range;
- ``teleport``: a per-step change of a dynamic dim larger than ``jump_margin`` × the largest real one.
  Both skip dims that never vary in real data (Meta-World's unused second-object slot): the world model
  lets them drift slightly, which is meaningless to every task here;
- ``disagreement-step`` / ``disagreement-total``: the world model's ensemble disagreement on the dream's
  own transitions, per step (max) and accumulated (mean), above a multiple of its halting bound;
- ``unsafe:<event>`` (only with ``filter.reject_unsafe=true``, checked by the filter job right after the
  physical checks): a dreamed state breaks a safety rule of ``safety.*`` (``dreamgen.safety.OBS_EVENTS``);
- ``low-quality``: the quality model's real-success probability below ``quality_threshold``.

Deterministic: the same store, models and thresholds give the same verdicts. Nothing is deleted and no
frame is touched: verdicts go to the store's ``verdict``/``reason``/``quality`` columns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.types import Episode

REASONS = ("non-finite", "action-bounds", "out-of-support", "teleport", "disagreement-step",
           "disagreement-total", "low-quality")
PASSED = "passed"


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    quality_threshold: float | None = None  # None: chosen for target_precision on audited (fit-fold) dreams
    target_precision: float = 0.9  # the precision the automatic threshold aims at
    support_margin: float = 0.1  # fraction of each dim's real range a state may lie outside it
    jump_margin: float = 1.5  # x the largest real per-step change of each dynamic dim
    disagreement_step: float = 1.0  # x the world model's halting bound, on any step
    disagreement_mean: float = 0.5  # x the bound, averaged over the dream's steps

    def __post_init__(self) -> None:
        if self.quality_threshold is not None and not 0 <= self.quality_threshold <= 1:
            raise ConfigError(f"filter.quality_threshold={self.quality_threshold}; must be in [0, 1] or 'auto'")
        if not 0 < self.target_precision <= 1:
            raise ConfigError(f"filter.target_precision={self.target_precision}; must be in (0, 1]")
        for name in ("support_margin", "jump_margin", "disagreement_step", "disagreement_mean"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"filter.{name}={getattr(self, name)}; must be >= 0")


@dataclasses.dataclass(frozen=True)
class Support:
    """What real data looks like: per-dim ``low``/``high`` of states and the largest per-step change
    ``jump`` of each dim (over real episodes)."""

    low: np.ndarray
    high: np.ndarray
    jump: np.ndarray

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode]) -> Support:
        obs = np.concatenate([e.obs for e in episodes])
        jump = np.max(np.concatenate([np.abs(np.diff(e.obs, axis=0)) for e in episodes if len(e) > 1]), axis=0)
        return cls(obs.min(0), obs.max(0), jump)


def physical_reason(episode: Episode, support: Support, config: FilterConfig, dynamic: slice) -> str:
    """The first failing physical check of one dream (not disagreement, not quality), or ``passed``."""
    obs, action = np.asarray(episode.obs, np.float64), np.asarray(episode.action, np.float64)
    if not (np.isfinite(obs).all() and np.isfinite(action).all()) or episode.meta.get("ended") == "non-finite":
        return "non-finite"
    if np.abs(action).max() > 1.0 + 1e-6:
        return "action-bounds"
    vary = support.high - support.low > 1e-6
    span = (support.high - support.low) * config.support_margin
    if ((obs < support.low - span) | (obs > support.high + span))[:, vary].any():
        return "out-of-support"
    if len(obs) > 1:
        moves = support.jump[dynamic] > 1e-6  # dims that never move within a real episode: support covers them
        jumps = np.abs(np.diff(obs[:, dynamic], axis=0))[:, moves]
        if (jumps > support.jump[dynamic][moves] * config.jump_margin + 1e-6).any():
            return "teleport"
    return PASSED


def _as_seen(episode: Episode) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A dream's states, frames and actions as the dream env saw them (non-finite values zeroed, actions clipped)."""
    return np.nan_to_num(episode.obs, posinf=0, neginf=0), episode.images, np.clip(np.nan_to_num(episode.action), -1, 1)


def disagreement(model: Any, episode: Episode, cond: np.ndarray) -> np.ndarray:
    """The world model's disagreement ``[T]`` on the dream's own transitions (as the dream env saw them; a
    latent model's on the latents of the dream's frames)."""
    return model.episode_disagreement(*_as_seen(episode), cond)


def prediction(model: Any, episode: Episode, cond: np.ndarray) -> Any:
    """The world model's whole prediction on the dream's own transitions (``disagreement``'s, with every head:
    a safety head's risk too), for a model with ``episode_prediction``."""
    return model.episode_prediction(*_as_seen(episode), cond)


def verdicts(physical: np.ndarray, dis_step: np.ndarray, dis_mean: np.ndarray, quality: np.ndarray,
             bound: float, config: FilterConfig, threshold: float) -> np.ndarray:
    """Reason per dream from its physical reason, disagreement (max, mean) and quality score."""
    reason = np.asarray(physical, dtype=object).copy()
    ok = reason == PASSED
    for name, fails in (("disagreement-step", dis_step > config.disagreement_step * bound),
                        ("disagreement-total", dis_mean > config.disagreement_mean * bound),
                        ("low-quality", ~(quality >= threshold))):
        hit = ok & fails
        reason[hit] = name
        ok &= ~hit
    return reason


def pick_threshold(score: np.ndarray, label: np.ndarray, eligible: np.ndarray, target: float,
                   min_accepted: int = 10) -> dict[str, Any]:
    """The lowest score threshold whose accepted set (eligible & score >= t) has precision >= ``target``
    with at least ``min_accepted`` dreams; if none reaches it, the most precise one (and ``met=False``)."""
    score, label, eligible = np.asarray(score, float), np.asarray(label, bool), np.asarray(eligible, bool)
    best: dict[str, Any] | None = None
    for t in np.unique(score[eligible]):
        accepted = eligible & (score >= t)
        n = int(accepted.sum())
        if n < min_accepted:
            continue
        precision = float(label[accepted].mean())
        entry = {"threshold": float(t), "precision": precision, "accepted": n,
                 "recall": float((accepted & label).sum() / max(int(label.sum()), 1)), "met": precision >= target}
        if entry["met"]:
            return entry
        if best is None or precision > best["precision"]:
            best = entry
    return best or {"threshold": 1.0, "precision": float("nan"), "accepted": 0, "recall": 0.0, "met": False}

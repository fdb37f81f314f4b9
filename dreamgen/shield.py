"""A safety shield: every action is checked in the world model before the real robot takes it.

``Shield(model)`` wraps a policy's act function (``dreamgen.evaluate.Act``). Each step, the proposed action
is scored by the model's safety head (``dreamgen.world_model.risk``) from the real observation and the
actions really taken before it. An action is *unsafe* when its ``risk`` reaches the threshold (the head's
own, calibrated on held-out real episodes, unless one is given) or the model is unsure there (unsure is
never read as safe). With ``rules`` (a ``dreamgen.safety.SafetySpec`` that has ``hand_out_of_workspace``),
an action is also unsafe when the dynamics' predicted next state puts the hand outside the box (one that is
outside already: when it is not predicted to come back towards it): a rule on the
state needs no learned head, and the head sees few such frames (a planner's way of going unsafe, measured in
docs/benchmarks.md). An unsafe action is replaced by the nearest of ``candidates`` actions around it (the
action plus Gaussian noise, and the action with the arm held still) that the model predicts safe; where
none is, by the least risky. Every intervention is counted per episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dreamgen.errors import ConfigError
from dreamgen.world_model.base import next_context


def require_safety_head(model: Any, where: str) -> None:
    """Refuse ``model`` for ``where`` (a setting) when it predicts no safety head."""
    if "risk" not in tuple(getattr(model, "heads", ())):
        name = getattr(model, "info", {}).get("world_model_id", "")
        raise ConfigError(f"{where}: the world model {name} has no safety head (its heads: "
                          f"{', '.join(getattr(model, 'heads', ()))}); train one with world_model.safety_head."
                          "enabled=true on a store with safety labels and risky episodes (collect.n_risky)")


class Shield:
    """Checks and, where needed, replaces a batch of actions; keeps per-row counts (``reset`` per batch)."""

    RETURN = 0.002  # m: a hand outside the box must be predicted this much nearer it to be safe

    def __init__(self, model: Any, *, threshold: float | None = None, candidates: int = 64, noise: float = 0.6,
                 seed: int = 0, rules: Any = None):
        require_safety_head(model, "the shield")
        if candidates < 1 or not noise > 0:
            raise ConfigError(f"shield candidates={candidates} must be >= 1 and noise={noise} > 0")
        self.model = model
        self.threshold = float(model.risk.thresholds[-1]) if threshold is None else float(threshold)
        if not 0 < self.threshold < 1:
            raise ConfigError(f"shield threshold={self.threshold} must be in (0, 1)")
        self.candidates, self.noise = int(candidates), float(noise)
        self.box = None  # (hand slice, low, high): the workspace rule on the predicted next state
        if rules is not None and "hand_out_of_workspace" in rules.events:
            self.box = (rules.hand, *(torch.as_tensor(np.asarray(b, np.float32), device=model.device)
                                      for b in (rules.workspace_low, rules.workspace_high)))
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.reset(0)

    def reset(self, rows: int) -> None:
        self.context = torch.zeros(rows, self.model.context_dim, device=self.model.device)
        self.checks = np.zeros(rows, np.int64)
        self.interventions = np.zeros(rows, np.int64)
        self.unresolved = np.zeros(rows, np.int64)  # interventions where no candidate was predicted safe

    def outside(self, obs: torch.Tensor) -> torch.Tensor:
        """How far (m, summed over axes) the hand in ``obs[B, O]`` lies outside the workspace box."""
        assert self.box is not None
        hand, low, high = self.box
        at = obs[:, hand]
        return (torch.clamp(low - at, min=0) + torch.clamp(at - high, min=0)).sum(-1)

    def risk(self, obs: torch.Tensor, action: torch.Tensor, cond: torch.Tensor,
             context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(risk[B], unsafe[B])`` of taking ``action`` at ``obs`` (``cond``: instruction embeddings); with the
        workspace rule, ``risk`` adds how far the predicted hand lies outside the box (1 mm: 1), and a hand already
        outside is safe only when predicted nearer it (so the shield steers it back in)."""
        pred = self.model.predict(obs, action, cond, propagation="mean", context=context)
        risk = pred.head("risk")
        unsafe = (risk >= self.threshold) | (pred.head("risk_unsure") > 0)
        if self.box is not None:  # outside the box is unsafe, unless the hand is brought back towards it
            outside, now = self.outside(pred.next_obs), self.outside(obs)
            # a metre outside weighs 1000 of risk: where nothing is safe, the hand comes back in first
            risk, unsafe = risk + 1e3 * outside, unsafe | ((outside > 0) & (outside >= now - self.RETURN))
        return risk, unsafe

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, cond: np.ndarray, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The actions to execute for ``rows`` (the proposed ``actions`` where predicted safe)."""
        dev = self.model.device
        o = torch.as_tensor(np.asarray(obs, np.float32), device=dev)
        a = torch.as_tensor(np.asarray(actions, np.float32), device=dev)
        c = torch.as_tensor(np.asarray(cond, np.float32), device=dev)
        index = torch.as_tensor(np.asarray(rows), device=dev)
        context = self.context[index]
        _, unsafe = self.risk(o, a, c, context)
        chosen = a.clone()
        bad = torch.nonzero(unsafe).flatten()
        if len(bad):
            n = self.candidates
            base = a[bad].repeat_interleave(n, 0)
            candidates = torch.clamp(base + self.noise * torch.randn(base.shape, generator=self.generator, device=dev),
                                     -1, 1).view(len(bad), n, -1)
            candidates[:, 0] = a[bad]
            candidates[:, 0, :3] = 0.0  # the arm held still (the gripper as proposed)
            flat = candidates.reshape(len(bad) * n, -1)
            risk, no = self.risk(o[bad].repeat_interleave(n, 0), flat, c[bad].repeat_interleave(n, 0),
                                 context[bad].repeat_interleave(n, 0))
            risk, no = risk.view(len(bad), n), no.view(len(bad), n)
            distance = torch.linalg.vector_norm(candidates - a[bad, None], dim=-1)
            # the nearest safe candidate; where none is safe, the least risky
            score = torch.where(no, 1e6 + risk, distance)
            best = score.argmin(1)
            chosen[bad] = candidates[torch.arange(len(bad), device=dev), best]
            resolved = (~no).any(1).cpu().numpy()
            np.add.at(self.interventions, np.asarray(rows)[bad.cpu().numpy()], 1)
            np.add.at(self.unresolved, np.asarray(rows)[bad.cpu().numpy()[~resolved]], 1)
        np.add.at(self.checks, np.asarray(rows), 1)
        self.context[index] = next_context(context, chosen)
        return chosen.cpu().numpy()

    def wrap(self, act: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        """``act`` (``dreamgen.evaluate.Act``) with every action it proposes checked first."""
        return lambda obs, cond, rows, images: self(obs, cond, rows, act(obs, cond, rows, images))

    def stats(self) -> dict[str, Any]:
        """Per episode: steps checked and interventions; and the totals."""
        checks, hits = int(self.checks.sum()), int(self.interventions.sum())
        return {"threshold": self.threshold, "checks": checks, "interventions": hits,
                "intervention_share": hits / checks if checks else float("nan"),
                "unresolved": int(self.unresolved.sum()),
                "interventions_per_episode": float(self.interventions.mean()) if len(self.interventions) else float("nan")}

"""A world model whose outputs are known exactly: ``s' = s + a``, reward ``-|s'|_1``.

success_prob is 1 once ``|s'|_inf < 0.05``; disagreement is ``|s'|_inf`` (so halting happens far from
the origin); the instruction "break" makes every prediction NaN from the second step on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamgen.dream.core import StartPool
from dreamgen.world_model.base import InstructionTable, ObsLayout, Prediction, StepsRows

LINE = ObsLayout("line", 2, dynamic=(0, 2))
TABLE = InstructionTable(["go home", "go home too", "break"], ["home", "home-b", "broken"],
                         np.eye(3, dtype=np.float32))


class LineModel(StepsRows):
    layout = LINE
    action_dim = 2
    cond_dim = 3
    context_dim = 0
    members = 2
    instructions = TABLE
    disagreement_bound = float("inf")
    device = torch.device("cpu")

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.expand(self.members, *cond.shape).clone()

    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *, generator=None,
                propagation: str = "random", members=None, context=None) -> Prediction:
        nxt = obs + action
        broken = cond[0, :, 2] > 0.5
        nxt = torch.where(broken[:, None] & (obs[:, :1] != 7.0), torch.full_like(nxt, float("nan")), nxt)
        return Prediction(nxt, {"reward": -nxt.abs().sum(1), "success": (nxt.abs().amax(1) < 0.05).float(),
                                "done": torch.zeros(len(obs))}, nxt.abs().amax(1))


POOL = StartPool(
    obs=np.array([[1.0, 1.0], [-2.0, 0.5], [0.5, 0.0], [7.0, 0.0]], np.float32),
    task=np.array(["home", "home", "home-b", "broken"]),
    ref=np.array(["a@0", "b@0", "c@0", "d@0"], dtype=object),
    seed=np.array([11, 12, 13, 14]),
)


def reference_episode(start: np.ndarray, actions: np.ndarray, horizon: int, bound: float = float("inf"),
                      penalty: float = 0.0) -> tuple[list[float], str]:
    """Rewards and the end reason of one episode, computed directly from the dynamics."""
    s = np.asarray(start, np.float64)
    rewards = []
    for t, a in enumerate(actions, start=1):
        s = s + np.clip(a, -1, 1)
        dis = np.abs(s).max()
        rewards.append(-np.abs(s).sum() - penalty * dis)
        if dis < 0.05:
            return rewards, "success"
        if dis > bound:
            return rewards, "halted"
        if t >= horizon:
            return rewards, "horizon"
    return rewards, "running"


class LagModel(LineModel):
    """``s' = s + a_prev``: an action takes effect one step late, through the env's context of previous
    actions (like Meta-World's hand chasing its mocap target). ``context_dim`` = one action."""

    context_dim = 2

    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *, generator=None,
                propagation: str = "random", members=None, context=None) -> Prediction:
        return super().predict(obs, context, cond)

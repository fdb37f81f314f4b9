"""Planning as a policy: MPC with a world model, on the real simulator or inside a dream.

``MPCPolicy(model, planner, seed=...)`` follows ``policies.base.Policy``: ``act(obs[B,O],
instruction[B,C]) -> action[B,A]`` plans from each row's observation with ``MPPIPlanner`` and returns
the plan's first action. It keeps, per row, the model's rollout state after the actions it really
executed (what the model carries beyond the observation is the model's: ``executed`` / ``resumed``) and
the warm-start plan; ``reset(rows)`` begins new episodes and
``act(..., rows=idx)`` / ``record(action, rows=idx)`` address a subset of rows (finished episodes drop
out of an evaluation batch). Step ``k`` of a row plans with seed ``(seed, k)``, so a rollout is a pure
function of the seed and the observations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dreamgen.plan.mppi import GoalDistance, MPPIPlanner, shift
from dreamgen.seeding import derive_seed
from dreamgen.world_model.base import RowState


class MPCPolicy:
    """Receding-horizon control with a world model; rows are episodes run side by side."""

    def __init__(self, model: Any, planner: MPPIPlanner, *, seed: int = 0, info: dict[str, Any] | None = None,
                 goal_of: Callable[[np.ndarray], GoalDistance] | None = None):
        self.model, self.planner, self.seed = model, planner, int(seed)
        self.goal_of = goal_of  # each row's goal distance from its instruction embedding (planner.objective.goal)
        self.info = dict(info or {})
        # inside a dream of a latent model: the dream's own rollout state of rows (their latent); the
        # observation alone cannot be encoded without the frames it was seen in
        self.dream_state: Callable[[np.ndarray], RowState] | None = None
        self.reset(0)

    def reset(self, rows: int) -> None:
        """Begin ``rows`` new episodes: no previous actions, no warm start."""
        dev, c = self.model.device, self.planner.config
        # what each row carries from the actions it executed: blank rows, advanced by ``record``
        self.memory = self.model.blank(rows, generator=torch.Generator(device=dev))
        self.warm = torch.zeros(rows, c.horizon, self.model.action_dim, device=dev)
        self.has_warm = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.steps = np.zeros(rows, np.int64)

    def _rows(self, rows: Any, n: int) -> np.ndarray:
        if rows is None:
            if len(self.steps) != n:
                self.reset(n)
            return np.arange(n)
        return np.asarray(rows, np.int64)

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = True,
            rows: Any = None, record: bool = True, reference: Any = None) -> np.ndarray:
        """The planned first action of each row (``rows``: which episodes these are; default all).
        ``record=False``: the caller executes something else (say, with noise) and ``record``s that."""
        idx = self._rows(rows, len(obs))
        if not len(idx):
            return np.zeros((0, self.model.action_dim), np.float32)
        dev = self.model.device
        generator = torch.Generator(device=dev)
        # the key is the first row's (episode, step): rows planned together share one draw of noise
        generator.manual_seed(derive_seed(self.seed, "mpc", int(idx[0]), int(self.steps[idx[0]])))
        if self.dream_state is not None:
            state = self.dream_state(idx)
        else:
            state = self.model.initial_state(torch.as_tensor(obs, dtype=torch.float32, device=dev),
                                             torch.as_tensor(instruction_embedding, dtype=torch.float32, device=dev),
                                             generator=generator)
        t_idx = torch.as_tensor(idx, device=dev)
        state = self.model.resumed(state, self.memory.index(t_idx))
        goal = None if self.goal_of is None else self.goal_of(np.asarray(instruction_embedding))
        plan = self.planner.plan(state, instruction_embedding, warm=self.warm[t_idx], warm_rows=self.has_warm[t_idx],
                                 seed=int(torch.randint(2**62, (1,), generator=generator)), reference=reference,
                                 goal=goal)
        self.warm[t_idx], self.has_warm[t_idx] = shift(plan.mean), True
        action = plan.action.cpu().numpy().astype(np.float32)
        if record:
            self.record(action, rows=idx, planned=True)
        return action

    def record(self, action: np.ndarray, *, rows: Any = None, planned: bool = False) -> None:
        """The actions the rows really executed (their model context); an unplanned action drops the row's
        warm start."""
        idx = self._rows(rows, len(action))
        t_idx = torch.as_tensor(idx, device=self.model.device)
        a = torch.as_tensor(np.asarray(action, np.float32), device=self.model.device)
        self.memory.put(t_idx, self.model.executed(self.memory.index(t_idx), a))
        if not planned:
            self.has_warm[t_idx] = False
        self.steps[idx] += 1

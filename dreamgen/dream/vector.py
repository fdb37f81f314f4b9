"""``DreamVectorEnv`` (a real ``gymnasium.vector.VectorEnv``) and ``DreamEnv`` (its single-env face).

Observation: ``Dict(state=Box(O), instruction=Box(C))`` — the real env's state plus the instruction
embedding; action: the real env's ``Box(-1, 1, (A,))``. Autoreset is gymnasium's NEXT_STEP: the step
after a row ends returns that row's fresh start observation with reward 0 and no termination.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgen.dream.core import DreamConfig, DreamCore, StartPool
from dreamgen.world_model.base import WorldModel


class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams stepped by one batched model call per ``step``."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, model: WorldModel, pool: StartPool, instructions: str | Sequence[str], num_envs: int,
                 config: DreamConfig | None = None, *, seed: int | None = None, success_rule: Any = None):
        self.core = DreamCore(model, pool, instructions, num_envs, config or DreamConfig(), seed=seed,
                              success_rule=success_rule)
        self.num_envs = num_envs
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every row (``options``: see ``DreamCore.reset_rows``); ``info`` names each start."""
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self.core.seed(seed)
        self.core.reset_rows(np.arange(self.num_envs), options)
        self._autoreset[:] = False
        return self.core.observation(), self._start_info()

    def _start_info(self) -> dict[str, np.ndarray]:
        return {"start_ref": self.core.start_ref.copy(), "start_seed": self.core.start_seed.copy()}

    def step(self, actions: Any):
        reward, terminated, truncated, info = self.core.transition(actions)
        restart = self._autoreset
        if restart.any():
            self.core.reset_rows(restart)
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
            for key in ("success", "halted"):
                info[key][restart] = False
            info["reason"][restart] = ""
        info["reset"] = restart.copy()
        info.update(self._start_info())
        self._autoreset = terminated | truncated
        return self.core.observation(), reward, terminated, truncated, info


class DreamEnv(gym.Env):
    """One dream: the single-env face of ``DreamCore`` (passes ``gymnasium.utils.env_checker.check_env``)."""

    metadata = {"render_modes": []}

    def __init__(self, model: WorldModel, pool: StartPool, instruction: str,
                 config: DreamConfig | None = None, *, seed: int | None = None):
        self.core = DreamCore(model, pool, [instruction], 1, config or DreamConfig(), seed=seed)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed(seed)
        if options:  # single-env options take scalars: instruction, start_obs[O], start_ref, start_seed
            options = {key: [value] for key, value in options.items()}
            options = {"instructions": options.get("instruction"), "start_obs": options.get("start_obs"),
                       "start_refs": options.get("start_ref"), "start_seeds": options.get("start_seed", [-1])}
        self.core.reset_rows(np.array([0]), options)
        return self._obs(), {"start_ref": self.core.start_ref[0], "start_seed": int(self.core.start_seed[0])}

    def _obs(self) -> dict[str, np.ndarray]:
        return {key: value[0].copy() for key, value in self.core.observation().items()}

    def step(self, action: Any):
        reward, terminated, truncated, info = self.core.transition(np.asarray(action, np.float32)[None])
        return (self._obs(), float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                {key: value[0] for key, value in info.items()})

"""RL-library faces of the same batched dream core.

- ``DreamSB3VecEnv``: a stable-baselines3 ``VecEnv`` (SB3 rejects gymnasium's ``VectorEnv``) with SB3's
  same-step autoreset: a finished row's last observation goes to ``info["terminal_observation"]``
  and the returned observation is already the next episode's start.
- ``register_rllib_env``: registers a creator RLlib calls with ``env_config | {"num_envs": n}``; use
  it with ``config.env_runners(gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from dreamgen.dream.core import DreamConfig, DreamCore, StartPool
from dreamgen.dream.vector import DreamVectorEnv
from dreamgen.world_model.base import WorldModel

RLLIB_ENV_NAME = "dreamgen/dream"


class DreamSB3VecEnv(VecEnv):
    """``num_envs`` dreams as an SB3 ``VecEnv`` (Dict observations: use ``MultiInputPolicy``)."""

    def __init__(self, model: WorldModel, pool: StartPool, instructions: str | Sequence[str], num_envs: int,
                 config: DreamConfig | None = None, *, seed: int | None = None):
        self.core = DreamCore(model, pool, instructions, num_envs, config or DreamConfig(), seed=seed)
        super().__init__(num_envs, self.core.single_observation_space, self.core.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        if seed is not None:
            self.core.seed(seed)
        self._reset_seeds()
        self.core.reset_rows(np.arange(self.num_envs), self._options[0] if self._options else None)
        self._reset_options()
        return self.core.observation()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        reward, terminated, truncated, info = self.core.transition(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{key: value[i] for key, value in info.items()} for i in range(self.num_envs)]
        if done.any():
            last = self.core.observation()
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = {key: value[i].copy() for key, value in last.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self.core.reset_rows(done)
        return self.core.observation(), reward, done, infos

    def close(self) -> None:
        pass

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.core, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self.core, method_name)(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]


def make_dream_vector_env(env_config: dict[str, Any]) -> DreamVectorEnv:
    """RLlib's env creator: ``{"checkpoint", "store", "instructions", "num_envs", "dream": {...}, "seed"}``.

    Each env runner loads the checkpoint and the start states itself (paths travel, tensors do not).
    """
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.world_model.checkpoint import load_world_model

    config = dict(env_config)
    model = load_world_model(Path(config["checkpoint"]))
    pool = StartPool.from_store(TrajectoryStore.open(config["store"]))
    return DreamVectorEnv(model, pool, config["instructions"], int(config.get("num_envs", 1)),
                          DreamConfig(**config.get("dream", {})), seed=config.get("seed"))


def register_rllib_env(name: str = RLLIB_ENV_NAME, creator: Any = make_dream_vector_env) -> str:
    """Register ``creator`` under ``name`` for RLlib (vector entry point); returns the name."""
    from ray.tune.registry import register_env

    register_env(name, creator)
    return name

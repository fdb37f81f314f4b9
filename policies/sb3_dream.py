"""A policy trained *inside the dream* by stable-baselines3 PPO on the learned reward (model-based RL).

``train_in_dream(model, pool, instructions, ...) -> SB3DreamPolicy`` runs PPO on ``DreamSB3VecEnv``
(rows cycle through the instructions; halting and the MOPO penalty come from the dream config).
The checkpoint is the policy network's tensors in safetensors + JSON (never SB3's pickled zip), and
``act`` follows ``policies.base.Policy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

NET_ARCH = [128, 128]


def _spaces(obs_dim: int, cond_dim: int, action_dim: int) -> tuple[Any, Any]:
    from gymnasium import spaces

    obs = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                       "instruction": spaces.Box(-1.0, 1.0, (cond_dim,), np.float32)})
    return obs, spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


class SB3DreamPolicy:
    """An SB3 ``MultiInputActorCriticPolicy`` behind the dreamgen policy contract."""

    kind = "sb3"

    def __init__(self, policy: Any, obs_dim: int, cond_dim: int, action_dim: int, info: dict[str, Any] | None = None):
        self.policy, self.info = policy, dict(info or {})
        self.obs_dim, self.cond_dim, self.action_dim = obs_dim, cond_dim, action_dim

    @torch.no_grad()
    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = True) -> np.ndarray:
        action, _ = self.policy.predict({"state": np.asarray(obs, np.float32),
                                         "instruction": np.asarray(instruction_embedding, np.float32)},
                                        deterministic=deterministic)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from dreamgen.checkpoints import write_checkpoint

        write_checkpoint(path, self.policy.state_dict(), {
            "kind": self.kind, "algo": "ppo", "net_arch": NET_ARCH, "obs_dim": self.obs_dim,
            "cond_dim": self.cond_dim, "action_dim": self.action_dim, "info": self.info}, "policy.json")

    @classmethod
    def load(cls, path: str | Path) -> SB3DreamPolicy:
        from stable_baselines3.common.policies import MultiInputActorCriticPolicy

        from dreamgen.checkpoints import loading, read_checkpoint
        from policies.bc import MAKE

        spec, tensors = read_checkpoint(path, "policy.json", "policy", MAKE)
        with loading(path, "policy", MAKE):
            obs_space, action_space = _spaces(spec["obs_dim"], spec["cond_dim"], spec["action_dim"])
            policy = MultiInputActorCriticPolicy(obs_space, action_space, lambda _: 0.0, net_arch=spec["net_arch"])
            policy.load_state_dict(tensors)
        policy.set_training_mode(False)
        return cls(policy, spec["obs_dim"], spec["cond_dim"], spec["action_dim"], spec["info"])


def _ppo(model: Any, pool: Any, instructions: Sequence[str], *, steps: int, envs: int, seed: int, dream: Any,
         log_std_init: float = 0.0) -> Any:
    """SB3 PPO on ``envs`` dream rows cycling through ``instructions`` (each must be in the model's table)."""
    from stable_baselines3 import PPO

    from dreamgen.dream.adapters import DreamSB3VecEnv

    env = DreamSB3VecEnv(model, pool, list(np.resize(np.array(instructions, dtype=object), envs)), envs, dream,
                         seed=seed)
    n_steps = max(16, min(256, steps // envs))
    return PPO("MultiInputPolicy", env, n_steps=n_steps, batch_size=min(256, n_steps * envs), seed=seed,
               policy_kwargs={"net_arch": NET_ARCH, "log_std_init": log_std_init}, device="cpu", verbose=0)


def _wrap(ppo: Any, model: Any, info: dict[str, Any]) -> SB3DreamPolicy:
    ppo.policy.set_training_mode(False)
    info = {**info, "world_model_id": getattr(model, "info", {}).get("world_model_id", ""),
            "embodiment": getattr(model, "info", {}).get("embodiment")}
    return SB3DreamPolicy(ppo.policy, model.layout.obs_dim, model.cond_dim, model.action_dim, info)


def train_in_dream(model: Any, pool: Any, instructions: Sequence[str], *, steps: int, envs: int, seed: int,
                   dream: Any, info: dict[str, Any] | None = None) -> SB3DreamPolicy:
    """PPO for ``steps`` dream transitions over ``envs`` rows; each instruction must be in the model's table."""
    ppo = _ppo(model, pool, instructions, steps=steps, envs=envs, seed=seed, dream=dream)
    ppo.learn(total_timesteps=steps)
    return _wrap(ppo, model, {**(info or {}), "steps": steps, "envs": envs, "seed": seed,
                              "instructions": list(instructions)})


def clone_and_finetune(obs: np.ndarray, action: np.ndarray, cond: np.ndarray, config: Any, *, model: Any, pool: Any,
                       instructions: Sequence[str], steps: int, envs: int, seed: int, dream_config: Any,
                       log_std_init: float, dream: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                       max_dream_fraction: float = 0.0, info: dict[str, Any] | None = None,
                       on_epoch: Any = None) -> SB3DreamPolicy:
    """The second downstream policy family: an SB3 PPO policy whose actor is first behaviour-cloned on the
    capped real + dream mix (``policies.bc.fit_on_mix``: same batches, same step budget as BC), then
    fine-tuned by PPO for ``steps`` transitions inside the dream on the learned reward (0 = clone only).

    The achieved dream fraction goes to ``info["achieved_dream_fraction"]``.
    """
    from policies.bc import fit_on_mix

    torch.manual_seed(seed)
    ppo = _ppo(model, pool, instructions, steps=max(steps, envs), envs=envs, seed=seed, dream=dream_config,
               log_std_init=log_std_init)
    pools = [(obs, action, cond)] + ([dream] if dream is not None and len(dream[0]) else [])
    state = torch.as_tensor(np.concatenate([o for o, _, _ in pools]), dtype=torch.float32)
    instruction = torch.as_tensor(np.concatenate([c for _, _, c in pools]), dtype=torch.float32)
    target = torch.as_tensor(np.concatenate([a for _, a, _ in pools]), dtype=torch.float32)
    policy = ppo.policy
    actor = [p for name, p in policy.named_parameters() if "value_net" not in name and name != "log_std"]
    policy.set_training_mode(True)
    achieved = fit_on_mix(
        lambda index: torch.nn.functional.mse_loss(policy.get_distribution(
            {"state": state[index], "instruction": instruction[index]}).distribution.mean, target[index]),
        actor, len(obs), len(target) - len(obs), config, seed=seed, max_dream_fraction=max_dream_fraction,
        on_epoch=on_epoch)
    if steps > 0:
        ppo.learn(total_timesteps=steps)
    return _wrap(ppo, model, {**(info or {}), "achieved_dream_fraction": achieved, "finetune_steps": steps,
                              "envs": envs, "instructions": list(instructions), "log_std_init": log_std_init})

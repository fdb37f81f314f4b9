"""Policy samplers for generation: who acts inside the dream.

Every sampler is batched and follows ``policies.base.Policy``: ``act(obs[B,O], instruction[B,C]) ->
action[B,A]`` in [-1, 1]. Exploration noise comes from the sampler's own generator (seeded per
chunk), so a chunk's dreams depend only on ``(job seed, chunk index)``.

- ``expert``: Meta-World's scripted expert + Gaussian noise, acting on *dreamed* states. It knows
  the task's solution, so it is an **oracle labeller** — its name says so in every episode's provenance.
- ``policy``: a trained policy checkpoint (e.g. the BC policy) + Gaussian noise.
- ``random``: uniform random actions (play).
- ``sb3``: a policy trained inside the dream by SB3 on the learned reward (``policies.sb3_dream``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError

KINDS = ("expert", "policy", "random", "sb3")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What acts in the dream. ``checkpoint`` is the policy directory for ``policy`` and ``sb3``."""

    kind: str = "expert"
    noise: float = 0.1  # std of Gaussian action noise (not used by ``random``)
    checkpoint: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"generate.sampler.kind={self.kind!r}; accepted: {', '.join(KINDS)}")
        if not self.noise >= 0:
            raise ConfigError(f"generate.sampler.noise={self.noise}; must be >= 0")

    @property
    def name(self) -> str:
        """The provenance label of every dream this sampler produces."""
        if self.kind == "expert":
            return f"oracle-expert(noise={self.noise:g})"
        if self.kind == "random":
            return "random"
        return f"{self.kind}:{self.checkpoint}(noise={self.noise:g})"


class _Noisy:
    """``base.act`` (deterministic) + Gaussian noise from ``rng``, clipped to the action box."""

    def __init__(self, noise: float, rng: np.random.Generator):
        self.noise, self.rng = noise, rng

    def _finish(self, action: np.ndarray) -> np.ndarray:
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class ExpertSampler(_Noisy):
    """The scripted expert of ``task`` on each row's (dreamed) state: an oracle labeller."""

    def __init__(self, task: str, noise: float, rng: np.random.Generator):
        from dreamgen.sim.metaworld import make_expert

        super().__init__(noise, rng)
        self.expert = make_expert(task)

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False) -> np.ndarray:
        action = np.stack([self.expert(state) for state in obs]).astype(np.float32)
        return action if deterministic else self._finish(action)


class PolicySampler(_Noisy):
    """A trained, language-conditioned policy (any ``policies`` checkpoint) plus exploration noise."""

    def __init__(self, policy: Any, noise: float, rng: np.random.Generator):
        super().__init__(noise, rng)
        self.policy = policy

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False) -> np.ndarray:
        action = self.policy.act(obs, instruction_embedding, deterministic=True)
        return action if deterministic else self._finish(action)


class RandomSampler:
    """Uniform random actions in [-1, 1] (play)."""

    def __init__(self, action_dim: int, rng: np.random.Generator):
        self.action_dim, self.rng = action_dim, rng

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, (len(obs), self.action_dim)).astype(np.float32)


def load_sampler_policy(spec: SamplerSpec) -> Any:
    """The trained policy a ``policy``/``sb3`` sampler wraps (load once per worker), else ``None``."""
    if spec.kind not in ("policy", "sb3"):
        return None
    from policies import load_policy

    return load_policy(spec.checkpoint)


def make_sampler(spec: SamplerSpec, task: str, rng: np.random.Generator, *, action_dim: int,
                 policy: Any = None) -> Any:
    """The sampler for one chunk of ``task`` (``""`` for a novel instruction) with its own ``rng``."""
    if spec.kind == "expert":
        if not task:
            raise ConfigError("generate.sampler.kind=expert needs a known task; a novel instruction "
                              "(allow_novel=true) needs a learned sampler: policy, sb3 or random")
        return ExpertSampler(task, spec.noise, rng)
    if spec.kind == "random":
        return RandomSampler(action_dim, rng)
    return PolicySampler(policy if policy is not None else load_sampler_policy(spec), spec.noise, rng)

"""Downstream policy families by name: one spelling from ``policy.family`` to the checkpoint's ``kind``.

A family is one ``PolicyFamily``: how it learns from the capped real + dream mix (``fit``), how its
checkpoint loads (``load``), and what it needs (camera frames; a world model to plan with). ``train-policy``,
``sweep``, ``evaluate`` and ``load_policy`` look the family up; none compares family names.

    bc        language-conditioned MLP behaviour cloning on the state (``policies.bc``)
    bc-image  the same from the camera: frames + proprioception (an image store)
    sb3       an SB3 PPO actor cloned on the same mix, then fine-tuned by PPO in the dream (``policies.sb3_dream``)
    diffusion lerobot's Diffusion Policy, state-only, with action chunking (``policies.diffusion``)
    mpc       MPPI with the world model at every step: trains nothing, evaluated only (``policies.mpc``)

A new family is a module calling ``register(PolicyFamily(...))``, imported before use or installed with an
entry point in group ``dreamgen.policies``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dreamgen.errors import CheckpointError, ConfigError
from dreamgen.registry import Registry

ENTRY_POINTS = "dreamgen.policies"


@dataclasses.dataclass
class TrainingData:
    """What a family learns from: the real frames ``obs[N,O]``, ``action[N,A]``, ``cond[N,C]`` (instruction
    embeddings) and, for a family that sees the cameras, ``images[N,C,H,W,3]``; the capped share's frames
    (``dream``: ``(obs, action, cond[, images])`` or None) at ``max_dream_fraction``; the BC settings
    (``config``), seed, ``info`` to record, the epoch callback, the run (``cfg``: its full config;
    ``robot``: the embodiment; ``cameras``: the real store's), and the episodes' lengths of both pools."""

    obs: np.ndarray
    action: np.ndarray
    cond: np.ndarray
    images: np.ndarray | None
    dream: Any  # (obs, action, cond[, images]) or None
    max_dream_fraction: float
    config: Any  # policies.bc.BCConfig
    seed: int
    info: dict[str, Any]
    on_epoch: Callable[[int, float], None] | None
    cfg: Any
    robot: Any
    cameras: Any
    lengths: np.ndarray | None = None  # the real frames' episode lengths, in order (a chunking family's windows)
    dream_lengths: np.ndarray | None = None  # the same of the capped share's frames


@dataclasses.dataclass(frozen=True)
class PolicyFamily:
    """``fit(TrainingData) -> Policy`` (None: the family trains nothing — ``untrained`` says what to run
    instead); ``load(path) -> Policy`` reads its checkpoint; ``check(cfg)`` refuses its own bad settings."""

    name: str
    summary: str
    fit: Callable[[TrainingData], Any] | None
    load: Callable[[Path], Any] | None
    check: Callable[[Any], None] = lambda cfg: None
    images: bool = False  # learns from camera frames (its stores must be image stores)
    plans: bool = False  # acts by planning with a world model (evaluate builds it from policy.mpc)
    episodic: bool = False  # keeps per-episode state (action chunks): acts only in episodes begun by reset(rows)
    untrained: str = ""
    make: Callable[[Any, Any], Any] | None = None  # an evaluate-only family's policy from (config, embodiment)
    epochs: Callable[[Any], int] = lambda cfg: int(cfg.policy.epochs)  # passes its training makes (progress)


FAMILIES: Registry[PolicyFamily] = Registry("policy family", ENTRY_POINTS)
register = FAMILIES.register


def listing(trained: bool = False) -> str:
    """The families (``trained``: those that train a checkpoint), each with its summary."""
    return ", ".join(f"{f.name} ({f.summary})" for f in FAMILIES if f.fit is not None or not trained)


def get(name: Any, *, where: str = "policy.family", trained: bool = False) -> PolicyFamily:
    """The family called ``name`` (``trained``: one that trains a checkpoint), or a ``ConfigError``."""
    family = FAMILIES.find(name)
    if family is None:
        raise ConfigError(f"{where}={name!r}; accepted: {listing(trained)}")
    if trained and family.fit is None:
        raise ConfigError(f"{where}={name} trains nothing: {family.untrained}")
    return family


def loader(kind: Any, config_file: Path) -> Callable[[Path], Any]:
    """How a checkpoint of ``kind`` loads, or a ``CheckpointError`` naming the kinds there are."""
    family = FAMILIES.find(kind)
    if family is None or family.load is None:
        known = ", ".join(f.name for f in FAMILIES if f.load is not None)
        raise CheckpointError(f"{config_file}: unknown policy kind {kind!r}; known: {known}")
    return family.load


# ---------------------------------------------------------------------- the families dreamgen ships
def _fit_bc(data: TrainingData) -> Any:
    from policies.bc import fit_bc

    return fit_bc(data.obs, data.action, data.cond, data.config, seed=data.seed, info=data.info,
                  on_epoch=data.on_epoch, dream=data.dream, max_dream_fraction=data.max_dream_fraction)


def _fit_image_bc(data: TrainingData) -> Any:
    from policies.bc import fit_image_bc

    hand, static = data.robot.parts.get("hand"), data.robot.layout.static
    dims = (list(range(hand.start, hand.stop)) if hand else []) + (list(range(*static)) if static else [])
    dream = data.dream
    assert data.images is not None
    return fit_image_bc(data.obs, data.images, data.action, data.cond, data.config, cameras=data.cameras,
                        obs_dims=dims, seed=data.seed, info={**data.info, "family": "bc-image"},
                        on_epoch=data.on_epoch, max_dream_fraction=data.max_dream_fraction,
                        dream=None if dream is None else (dream[0], dream[3], dream[1], dream[2]))


def _fit_sb3(data: TrainingData) -> Any:
    """An SB3 PPO actor cloned on the capped mix, then PPO in the dream of ``policy.sb3.world_model``."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import DreamConfig, StartPool
    from dreamgen.world_model.checkpoint import load_world_model
    from policies.sb3_dream import clone_and_finetune

    cfg = data.cfg
    s = cfg.policy.sb3
    model = load_world_model(s.world_model)
    pool = StartPool.from_store(TrajectoryStore.open(cfg.policy.store))
    instructions = [model.instructions.for_task(task) for task in cfg.tasks]
    return clone_and_finetune(data.obs, data.action, data.cond, data.config, model=model, pool=pool,
                              instructions=instructions, steps=int(s.steps), envs=int(s.envs), seed=data.seed,
                              dream_config=DreamConfig(**cfg.dream), log_std_init=float(s.log_std_init),
                              dream=data.dream, max_dream_fraction=data.max_dream_fraction,
                              info={**data.info, "family": "sb3", "world_model": str(s.world_model)},
                              on_epoch=data.on_epoch)


def _check_sb3(cfg: Any) -> None:
    s = cfg.policy.sb3
    if s.steps < 0 or s.envs < 1:
        raise ConfigError(f"policy.sb3.steps={s.steps} must be >= 0 and policy.sb3.envs={s.envs} >= 1")


def _diffusion_settings(cfg: Any) -> Any:
    from policies.diffusion import DiffusionSettings

    settings = DiffusionSettings.from_config(cfg.policy.get("diffusion"))
    settings.check()
    return settings


def _check_diffusion(cfg: Any) -> None:
    import importlib.util

    if importlib.util.find_spec("lerobot.policies.diffusion") is None:
        raise ConfigError("policy.family=diffusion needs lerobot's Diffusion Policy (lerobot.policies.diffusion), "
                          "which the installed lerobot does not provide; install lerobot==0.4.4 (`make install`)")
    _diffusion_settings(cfg)


def _fit_diffusion(data: TrainingData) -> Any:
    from policies.diffusion import fit_diffusion

    assert data.lengths is not None
    dream = None if data.dream is None else data.dream[:3]
    return fit_diffusion(data.obs, data.action, data.cond, data.lengths, _diffusion_settings(data.cfg),
                         robot=data.robot, batch_size=data.config.batch_size, weight_decay=data.config.weight_decay,
                         seed=data.seed, info={**data.info, "family": "diffusion"}, on_epoch=data.on_epoch,
                         dream=dream, dream_lengths=data.dream_lengths, max_dream_fraction=data.max_dream_fraction)


def _load(module: str, cls: str) -> Callable[[Path], Any]:
    def load(path: Path) -> Any:
        import importlib

        return getattr(importlib.import_module(module), cls).load(path)

    return load


register(PolicyFamily("bc", "MLP behaviour cloning", _fit_bc, _load("policies.bc", "BCPolicy")))
register(PolicyFamily("bc-image", "the same from the camera: an image store", _fit_image_bc,
                      _load("policies.bc", "ImageBCPolicy"), images=True))
register(PolicyFamily("sb3", "an SB3 PPO actor cloned on the same mix, then fine-tuned by PPO in the dream", _fit_sb3,
                      _load("policies.sb3_dream", "SB3DreamPolicy"), check=_check_sb3))
register(PolicyFamily("diffusion", "lerobot's Diffusion Policy, state-only, with action chunking", _fit_diffusion,
                      _load("policies.diffusion", "DiffusionPolicy"), check=_check_diffusion, episodic=True,
                      epochs=lambda cfg: _diffusion_settings(cfg).epochs))
class RandomPolicy:
    """Uniform random actions in [-1, 1]: the floor of a policy ranking (``policy.family=random``, seeded by the
    run seed, so an evaluation is reproducible) and the play sampler (``sampler=random``). ``deterministic``
    changes nothing."""

    kind = "random"

    def __init__(self, action_dim: int, rng: np.random.Generator, info: dict[str, Any] | None = None):
        self.action_dim, self.rng = action_dim, rng
        self.info: dict[str, Any] = info or {"family": "random"}

    @classmethod
    def seeded(cls, action_dim: int, seed: int) -> RandomPolicy:
        """The random family's policy for run seed ``seed``."""
        return cls(action_dim, np.random.default_rng([seed, 0x5EED]), {"family": "random", "seed": seed})

    def act(self, obs: np.ndarray, cond: np.ndarray, *, deterministic: bool = True, rows: Any = None) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, (len(obs), self.action_dim)).astype(np.float32)

    def reset(self, rows: int) -> None:
        """Stateless: nothing to reset."""


def _make_random(cfg: Any, robot: Any) -> Any:
    return RandomPolicy.seeded(robot.action_dim, int(cfg.seed))


register(PolicyFamily("mpc", "evaluate only", None, None, plans=True,
                      untrained="it plans with the world model at every step; run `dreamgen evaluate "
                                "policy.family=mpc` (the prior is policy.mpc.prior, trained with family=bc)"))
register(PolicyFamily("random", "evaluate only: uniform random actions, the floor of a ranking", None, None,
                      make=_make_random, untrained="it acts uniformly at random; run `dreamgen evaluate "
                                                   "policy.family=random` (no evaluate.policy needed)"))

__all__ = ["FAMILIES", "PolicyFamily", "RandomPolicy", "TrainingData", "get", "loader", "register"]

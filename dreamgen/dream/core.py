"""The batched dream: ``B`` episodes stepped through a world model with one model call per step.

``DreamCore`` holds every row's rollout state — the model's ``RowState`` (observation, conditioning,
member, previous actions), which the model creates and steps — plus step counts and start provenance,
and owns the rollout contract: start states, termination from the heads ``dream.success_head`` and
``dream.done_head`` name (or success by the task's own rule on the dreamed state, for a judge), truncation at the horizon,
MOReL-style halting when disagreement exceeds a bound calibrated on real data, a MOPO-style reward
penalty ``λ·disagreement``, and NaN/inf guards that end a row with a reason instead of crashing the
batch. It does *not* decide when to reset: the gymnasium vector env (NEXT_STEP autoreset), the single
env and the SB3 adapter (same-step autoreset) are thin faces over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from dreamgen.errors import DreamgenError
from dreamgen.world_model.base import PROPAGATIONS, WorldModel, require_heads

REASONS = np.array(["", "success", "done", "horizon", "halted", "non-finite"], dtype=object)
SUCCESS, DONE, HORIZON, HALTED, NONFINITE = 1, 2, 3, 4, 5
DEMO_KINDS = ("expert", "imported")
RULE = "rule"  # dream.success_head=rule: success is the task's own criterion on the dreamed state (the robot's)  # real episodes that are demonstrations (not play)


class DreamEnvError(DreamgenError, ValueError):
    """Bad input to a dream env: wrong batch shape, non-finite actions, unusable start states."""


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """How dreams are rolled out (defaults live in ``configs/config.yaml``, section ``dream``)."""

    horizon: int = 150  # steps before truncation
    propagation: str = "random"  # random | fixed | mean (see dreamgen.world_model.base)
    halt: bool = True  # truncate a row when its disagreement exceeds bound x halt_scale
    halt_scale: float = 1.0
    penalty: float = 0.0  # MOPO λ: reward - λ * disagreement
    success_threshold: float = 0.5  # the success head's probability at or above this counts as success
    terminate_on_success: bool = True
    done_threshold: float = 0.5
    success_head: str = "success"  # the heads (by name: Prediction.heads) whose probability marks success
    done_head: str = "done"  # ... and the end of an episode

    def identity(self) -> dict[str, Any]:
        """The settings as a job id hashes them: the heads are left out while they are the standard ones
        (ids from before heads were named stay the same)."""
        out = dataclasses.asdict(self)
        for name, standard in (("success_head", "success"), ("done_head", "done")):
            if out[name] == standard:
                del out[name]
        return out

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise DreamEnvError(f"dream.horizon={self.horizon}; must be >= 1")
        if self.propagation not in PROPAGATIONS:
            raise DreamEnvError(f"dream.propagation={self.propagation!r}; accepted: {', '.join(PROPAGATIONS)}")
        if self.penalty < 0 or self.halt_scale <= 0:
            raise DreamEnvError(f"dream.penalty={self.penalty} must be >= 0 and dream.halt_scale="
                                f"{self.halt_scale} > 0")
        for name in ("success_threshold", "done_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise DreamEnvError(f"dream.{name}={getattr(self, name)}; must be in (0, 1]")


@dataclasses.dataclass
class StartPool:
    """Real start states: ``obs[N,O]`` with their ``task[N]``, ``ref[N]`` ("<episode_id>@<t>"), layout
    ``seed[N]`` (-1 if unknown) and, from an image store, their camera frames ``images[N,C,H,W,3]``."""

    obs: np.ndarray
    task: np.ndarray
    ref: np.ndarray
    seed: np.ndarray
    images: np.ndarray | None = None
    cameras: Any = None  # dreamgen.sim.camera.Cameras of ``images``

    @classmethod
    def from_store(cls, store: Any, *, source: str = "real", demos_only: bool = False) -> StartPool:
        """The first frame of every ``source`` episode of a ``TrajectoryStore`` (``demos_only``: of its
        successful demonstrations, kind expert or imported)."""
        meta = store.meta(["source", "task", "episode_id", "seed", "kind", "success"])
        mask = meta["source"] == source
        if demos_only:
            mask &= is_demo(meta)
        keep = np.flatnonzero(mask)
        return cls(store.first_frames("obs", keep).astype(np.float32), meta["task"][keep].astype(str),
                   np.array([f"{e}@0" for e in meta["episode_id"][keep]], dtype=object), meta["seed"][keep],
                   store.first_frames("images", keep) if store.cameras is not None else None, store.cameras)

    @classmethod
    def from_simulator(cls, robot: Any, task: str, seeds: Sequence[int], cameras: Any = None) -> StartPool:
        """Start states at the real simulator's layouts ``seeds`` of ``task`` (with ``cameras``: their frames)."""
        env = robot.make_env(task)
        render = robot.cameras(env, cameras) if cameras is not None else None
        obs, frames = [], []
        for s in seeds:
            obs.append(env.reset(seed=int(s))[0])
            if render is not None:
                frames.append(render())
        if render is not None:
            render.close()
        env.close()
        return cls(np.stack(obs).astype(np.float32), np.array([task] * len(seeds)),
                   np.array([f"seed:{s}" for s in seeds], object), np.asarray(seeds, np.int64),
                   np.stack(frames) if frames else None, cameras)

    def indices(self, task: str) -> np.ndarray:
        """Pool rows of ``task``; ``task=""`` (an instruction matching no task) may start anywhere."""
        found = np.arange(len(self.task)) if task == "" else np.flatnonzero(self.task == task)
        if not len(found):
            raise DreamEnvError(f"no real start state for task {task!r}; the start pool holds "
                                f"{sorted(set(self.task.tolist()))}")
        return found


def is_demo(meta: dict[str, np.ndarray]) -> np.ndarray:
    """Which episodes are successful demonstrations (kind expert or imported), from their ``kind`` and
    ``success`` metadata."""
    return np.isin(meta["kind"], DEMO_KINDS) & meta["success"].astype(bool)


def demo_paths(store: Any) -> dict[str, list[np.ndarray]]:
    """The observations of every successful real demonstration of a store, per task."""
    meta = store.meta(["source", "task", "kind", "success"])
    keep = (meta["source"] == "real") & is_demo(meta)
    paths: dict[str, list[np.ndarray]] = {}
    for index, episode in enumerate(store.iter_episodes(images=False)):
        if keep[index]:
            paths.setdefault(str(meta["task"][index]), []).append(episode.obs)
    return paths


class DreamCore:
    """``num_envs`` dream rows. ``reset_rows`` starts episodes, ``transition`` steps every row once."""

    def __init__(self, model: WorldModel, pool: StartPool, instructions: Sequence[str], num_envs: int,
                 config: DreamConfig | None = None, *, seed: int | None = None,
                 success_rule: Callable[[np.ndarray], np.ndarray] | None = None):
        if num_envs < 1:
            raise DreamEnvError(f"num_envs={num_envs}; must be >= 1")
        if pool.obs.ndim != 2 or pool.obs.shape[1] != model.layout.obs_dim:
            raise DreamEnvError(f"start pool observations have shape {pool.obs.shape}; the model's layout "
                                f"{model.layout.name!r} needs [N, {model.layout.obs_dim}]")
        if model.cameras is not None:
            model.cameras.check_same(pool.cameras, "the start store", "the latent world model")
        config = config or DreamConfig()
        if config.success_head == RULE and success_rule is None:
            raise DreamEnvError("dream.success_head=rule ends a dream by its task's own success rule, and this dream "
                                "was given none (the robot knows no rule for the task, or this use of the dream — "
                                "SB3 fine-tuning — does not take one); name a head, e.g. dream.success_head=success")
        require_heads(model, tuple(h for h in (config.success_head, config.done_head) if h != RULE),
                      "dream.success_head / dream.done_head")
        self.model, self.pool, self.config, self.num_envs = model, pool, config, num_envs
        self.success_rule = success_rule  # the task's own criterion on the dreamed state, instead of the head
        self.obs_dim, self.action_dim = model.layout.obs_dim, model.action_dim
        self.single_observation_space = spaces.Dict({
            "state": spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32),
            "instruction": spaces.Box(-1.0, 1.0, (model.cond_dim,), np.float32),
        })
        self.single_action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.table = model.instructions
        self.bound = model.disagreement_bound * config.halt_scale if config.halt else float("inf")
        self.set_instructions(instructions)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=model.device)
        self.generator.manual_seed(int(self.rng.integers(2**63)))
        # the rows' rollout state is the model's (observation, conditioning, member, previous actions)
        self.state = model.blank(num_envs, generator=self.generator)
        self._handed_out = False
        self.t = np.zeros(num_envs, np.int64)
        self.start_ref = np.full(num_envs, "", dtype=object)
        self.start_seed = np.full(num_envs, -1, np.int64)
        self.instruction_index = self.default_instruction.copy()

    @property
    def obs(self) -> torch.Tensor:
        """Every row's current observation ``[B,O]`` (the model state's)."""
        return self.state.obs

    # ------------------------------------------------------------------ setup
    def set_instructions(self, instructions: Sequence[str]) -> None:
        """One instruction per row, or one for all rows; each must be in the model's table."""
        texts = [instructions] if isinstance(instructions, str) else list(instructions)
        if len(texts) not in (1, self.num_envs):
            raise DreamEnvError(f"{len(texts)} instructions for {self.num_envs} envs; give one or {self.num_envs}")
        index = self.table.lookup(texts)
        self.default_instruction = np.resize(index, self.num_envs)
        for task in {self.table.tasks[i] for i in index}:
            self.pool.indices(task)  # fail now, not at the first reset

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        self.generator.manual_seed(int(self.rng.integers(2**63)))

    # ------------------------------------------------------------------ episodes
    def reset_rows(self, rows: np.ndarray, options: dict[str, Any] | None = None) -> None:
        """Start new episodes in ``rows`` (bool mask or indices).

        ``options`` (all optional, each with one entry per reset row): ``instructions`` (texts),
        ``start_obs[n,O]`` with ``start_refs`` (where each came from), ``start_seeds``, ``start_members`` (the
        ensemble member each row follows under ``propagation=fixed``; otherwise drawn) and (a latent model)
        ``start_images[n,C,H,W,3]`` — otherwise start states are drawn from the pool's real episodes of each
        row's task.
        """
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        if not len(rows):
            return
        options = options or {}
        instr = (self.table.lookup(list(options["instructions"])) if options.get("instructions") is not None
                 else self.default_instruction[rows])
        if len(instr) != len(rows):
            raise DreamEnvError(f"reset options: {len(instr)} instructions for {len(rows)} envs")
        if options.get("start_obs") is not None:
            start = np.asarray(options["start_obs"], np.float32)
            if start.shape != (len(rows), self.obs_dim) or not np.isfinite(start).all():
                raise DreamEnvError(f"reset options: start_obs must be finite with shape "
                                    f"({len(rows)}, {self.obs_dim}); got {start.shape}")
            refs: Any = list(options.get("start_refs") or ["given"] * len(rows))
            seeds = np.asarray(options.get("start_seeds", [-1] * len(rows)), np.int64)
            images = options.get("start_images")
            if self.model.cameras is not None and (images is None or np.shape(images)[0] != len(rows)):
                raise DreamEnvError(f"reset options: a latent world model needs start_images with {len(rows)} rows "
                                    "beside start_obs")
        else:
            pick = np.empty(len(rows), np.int64)
            for i in np.unique(instr):
                mine = instr == i
                candidates = self.pool.indices(self.table.tasks[i])
                pick[mine] = candidates[self.rng.integers(len(candidates), size=int(mine.sum()))]
            start, refs, seeds = self.pool.obs[pick], self.pool.ref[pick], self.pool.seed[pick]
            images = None if self.pool.images is None else self.pool.images[pick]
        dev = self.model.device
        if self._handed_out:  # an observation array handed out earlier is never written to
            self.state.obs, self._handed_out = self.state.obs.clone(), False
        emb = torch.as_tensor(self.table.embeddings[instr], device=dev)
        started = self.model.initial_state(torch.as_tensor(start, device=dev), emb, generator=self.generator,
                                           images=images)
        if options.get("start_members") is not None:
            members = np.asarray(options["start_members"], np.int64)
            if members.shape != (len(rows),) or members.min() < 0 or members.max() >= self.model.members:
                raise DreamEnvError(f"reset options: start_members must hold {len(rows)} members in "
                                    f"[0, {self.model.members}); got {members.tolist()[:10]}")
            started.member = torch.as_tensor(members, device=dev)
        self.state.put(rows, started)
        self.t[rows] = 0
        self.instruction_index[rows] = instr
        self.start_ref[rows] = refs
        self.start_seed[rows] = seeds

    def images(self) -> np.ndarray | None:
        """Every row's current camera frames ``uint8 [B,C,H,W,3]`` as the model draws them (None: a model
        that predicts no images)."""
        return self.model.render(self.state)

    def observation(self) -> dict[str, np.ndarray]:
        self._handed_out = True
        return {"state": self.obs.cpu().numpy(), "instruction": self.table.embeddings[self.instruction_index]}

    def check_actions(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs, self.action_dim):
            raise DreamEnvError(f"actions have shape {actions.shape}; this dream env needs "
                                f"({self.num_envs}, {self.action_dim})")
        bad = ~np.isfinite(actions).all(axis=1)
        if bad.any():
            raise DreamEnvError(f"non-finite actions for envs {np.flatnonzero(bad)[:10].tolist()}; "
                                "actions must be finite numbers in [-1, 1]")
        return np.clip(actions, -1.0, 1.0)

    def transition(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every row once (one model call): ``reward[B], terminated[B], truncated[B], info``;
        the new observation is ``self.obs``. ``info``: disagreement, success_prob, success, halted, reason."""
        action = torch.as_tensor(self.check_actions(actions), device=self.model.device)
        state, pred = self.model.step(self.state, action, generator=self.generator,
                                      propagation=self.config.propagation)
        next_obs, disagreement = state.obs, pred.disagreement.cpu().numpy()
        success_prob = pred.head("success" if self.config.success_head == RULE else self.config.success_head).cpu().numpy()
        reward = pred.head("reward").cpu().numpy() - self.config.penalty * disagreement
        finite = (torch.isfinite(next_obs).all(1).cpu().numpy() & np.isfinite(reward)
                  & np.isfinite(success_prob) & np.isfinite(disagreement))
        self.t += 1
        success = (self.success_rule(next_obs.cpu().numpy()) if self.success_rule is not None
                   else success_prob >= self.config.success_threshold)
        done = pred.head(self.config.done_head).cpu().numpy() >= self.config.done_threshold
        halted = disagreement > self.bound
        reason = np.zeros(self.num_envs, np.int64)
        reason[self.t >= self.config.horizon] = HORIZON
        reason[halted] = HALTED
        reason[done] = DONE
        if self.config.terminate_on_success:
            reason[success] = SUCCESS
        reason[~finite] = NONFINITE
        terminated = (reason == SUCCESS) | (reason == DONE)
        truncated = (reason >= HORIZON)
        if not finite.all():  # keep the last finite state; the row ends here
            keep = torch.as_tensor(~finite, device=next_obs.device)
            state.obs = torch.where(keep[:, None], self.obs, next_obs)
            reward = np.where(finite, reward, 0.0)
            success_prob = np.where(finite, success_prob, 0.0)
            success &= finite
        self.state, self._handed_out = state, False
        info = {"disagreement": disagreement.astype(np.float32), "success_prob": success_prob.astype(np.float32),
                "success": success, "halted": halted & finite, "reason": REASONS[reason]}
        return reward.astype(np.float32), terminated, truncated, info

"""Real-world collection: scripted-expert demos (with action noise), cheap noisy "play" and, for a safety
head to learn from, deliberately "risky" episodes, in the simulator of the embodiment the spec names
(``dreamgen.sim.base.Embodiment``).

With ``cameras`` every observation comes with its camera frames (``Episode.images``), rendered offscreen
in the same step. ``rollout_expert`` and ``rollout_play`` each run one episode from a known layout seed and return an
``Episode`` tagged with its kind, task, instruction, seed and real success label; ``rollout_risky`` drives
the hand at full speed along random headings, half of them down into the table, so that safety events
happen (``benchmarks/safety.py`` measures how often). ``collect_real``
yields every requested episode in a fixed, seed-derived order (so a run is reproducible).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.safety import SafetySpec
from dreamgen.seeding import derive_seed, make_rng
from dreamgen.sim.base import Embodiment, Expert
from dreamgen.spaces import Cameras
from dreamgen.types import Episode


@dataclasses.dataclass(frozen=True)
class CollectSpec:
    """What to collect per task, in which embodiment. Defaults live in ``configs/config.yaml``; this only
    validates."""

    embodiment: Embodiment
    tasks: tuple[str, ...]
    n_expert: int  # expert demos per task
    n_play: int  # play episodes per task
    expert_noise: float  # std of Gaussian action noise on expert demos
    play_noise: float  # std of Gaussian action noise on play episodes (expert-guided)
    play_random_prob: float  # per-step probability that a play action is uniform random
    play_steps: int  # length of a play episode
    post_success_steps: int  # expert demos are cut this many frames after first success
    max_steps: int  # hard cap on any episode
    n_risky: int = 0  # risky episodes per task (random full-speed headings: safety events for a safety head)
    cameras: Cameras | None = None  # render these with every observation (an image store); None: state only
    safety: SafetySpec | None = None  # label these safety events on every frame (``Episode.unsafe``); None: none

    def __post_init__(self) -> None:
        self.embodiment.check_tasks(self.tasks, field="tasks")
        for name in ("n_expert", "n_play", "n_risky"):
            if getattr(self, name) < 0:
                raise ConfigError(f"collect.{name}={getattr(self, name)} must be >= 0")
        if self.n_expert + self.n_play + self.n_risky == 0:
            raise ConfigError("collect.n_expert + collect.n_play + collect.n_risky is 0; nothing would be collected")
        for name in ("expert_noise", "play_noise"):
            if not 0 <= getattr(self, name) <= 2:
                raise ConfigError(f"collect.{name}={getattr(self, name)} must be in [0, 2]")
        if not 0 <= self.play_random_prob <= 1:
            raise ConfigError(f"collect.play_random_prob={self.play_random_prob} must be in [0, 1]")
        limit = self.embodiment.max_steps
        for name in ("play_steps", "max_steps") if self.embodiment.has_simulator else ():  # else: imported
            if not 1 <= getattr(self, name) <= limit:
                raise ConfigError(f"collect.{name}={getattr(self, name)} must be in [1, {limit}] "
                                  f"({self.embodiment.name}'s episode limit)")
        if self.post_success_steps < 0:
            raise ConfigError(f"collect.post_success_steps={self.post_success_steps} must be >= 0")

    @property
    def n_episodes(self) -> int:
        return len(self.tasks) * (self.n_expert + self.n_play + self.n_risky)


def _rollout(env: gym.Env, act, *, seed: int, max_steps: int, stop_after_success: int | None,
             meta: dict, render: Any = None, label: Any = None) -> Episode:
    obs, info = env.reset(seed=seed)
    frames: dict[str, list] = {"obs": [], "action": [], "reward": [], "success": [], "done": []}
    unsafe: list[np.ndarray] = []
    images: list[np.ndarray] = []
    first_success: int | None = None
    for t in range(max_steps):
        if render is not None:  # the camera frame of the observation the action is taken on
            images.append(render())
        action = act(obs)
        next_obs, reward, terminated, _, info = env.step(action)
        frames["obs"].append(obs)
        frames["action"].append(action)
        frames["reward"].append(reward)
        frames["success"].append(bool(info["success"]))
        frames["done"].append(bool(terminated))
        if label is not None:  # the state after the action, as success is
            unsafe.append(label(env, next_obs))
        obs = next_obs
        if info["success"] and first_success is None:
            first_success = t
        if terminated or (stop_after_success is not None and first_success is not None
                          and t >= first_success + stop_after_success):
            break
    return Episode(
        obs=np.asarray(frames["obs"], dtype=np.float32),
        action=np.asarray(frames["action"], dtype=np.float32),
        reward=np.asarray(frames["reward"], dtype=np.float32),
        success=np.asarray(frames["success"], dtype=bool),
        done=np.asarray(frames["done"], dtype=bool),
        meta={**meta, "seed": seed, "start_ref": f"seed:{seed}"},
        images=np.stack(images) if render is not None else None,
        unsafe=np.stack(unsafe).astype(bool) if label is not None else None,
    )


def rollout_expert(env: gym.Env, expert: Expert, rng: np.random.Generator, *, seed: int, noise: float,
                   max_steps: int, post_success_steps: int, meta: dict, render: Any = None,
                   label: Any = None) -> Episode:
    """One scripted-expert demo with Gaussian action noise, cut ``post_success_steps`` after success."""

    def act(obs: np.ndarray) -> np.ndarray:
        action = expert(obs)
        return np.clip(action + rng.normal(0.0, noise, action.shape), -1, 1).astype(np.float32)

    return _rollout(env, act, seed=seed, max_steps=max_steps, stop_after_success=post_success_steps,
                    meta={**meta, "kind": "expert", "sampler": f"expert+N(0,{noise})"}, render=render, label=label)


def rollout_play(env: gym.Env, expert: Expert, rng: np.random.Generator, *, seed: int, noise: float,
                 random_prob: float, steps: int, meta: dict, render: Any = None, label: Any = None) -> Episode:
    """Cheap non-expert interaction: a heavily perturbed expert with random actions mixed in."""

    def act(obs: np.ndarray) -> np.ndarray:
        if rng.random() < random_prob:
            return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        action = expert(obs)
        return np.clip(action + rng.normal(0.0, noise, action.shape), -1, 1).astype(np.float32)

    return _rollout(env, act, seed=seed, max_steps=steps, stop_after_success=None,
                    meta={**meta, "kind": "play",
                          "sampler": f"play(expert+N(0,{noise}), random p={random_prob})"}, render=render,
                    label=label)


def risky_actor(rng: np.random.Generator, action_dim: int) -> Any:
    """``obs -> action`` of the deliberately risky behaviour (one episode's: it keeps its heading): the hand
    moves at 50-100% speed along a random heading held for 5-20 steps, half the headings pointing down (into
    the table), the gripper random."""
    state: dict[str, Any] = {"left": 0, "move": np.zeros(3)}

    def act(obs: np.ndarray) -> np.ndarray:
        if state["left"] == 0:
            heading = rng.normal(size=3)
            heading[2] = -abs(heading[2]) - 0.5 if rng.random() < 0.5 else heading[2]
            state["move"] = heading / np.linalg.norm(heading) * rng.uniform(0.5, 1.0)
            state["left"] = int(rng.integers(5, 21))
        state["left"] -= 1
        action = np.zeros(action_dim, np.float32)
        action[:3] = state["move"]
        action[3:] = rng.uniform(-1, 1, action[3:].shape)
        return np.clip(action, -1, 1)

    return act


def rollout_risky(env: gym.Env, rng: np.random.Generator, *, seed: int, steps: int, meta: dict,
                  render: Any = None, label: Any = None) -> Episode:
    """A deliberately risky episode (``risky_actor``). Not a demo: never cloned."""
    act = risky_actor(rng, int(np.prod(env.action_space.shape or (4,))))
    return _rollout(env, act, seed=seed, max_steps=steps, stop_after_success=None,
                    meta={**meta, "kind": "risky", "sampler": "risky(random full-speed headings, half down)"},
                    render=render, label=label)


def collect_real(spec: CollectSpec, run_seed: int) -> Iterator[Episode]:
    """Every episode of ``spec``, task by task: experts first, then play, then risky. Reproducible from
    ``run_seed`` (a count of 0 draws nothing, so adding a kind leaves the others' episodes as they were)."""
    robot = spec.embodiment
    robot.require_simulator("collect", "import its demonstrations instead (collect.import_root)")
    for task_index, task in enumerate(spec.tasks):
        env, expert = robot.make_env(task, max_episode_steps=spec.max_steps), robot.make_expert(task)
        render = robot.cameras(env, spec.cameras) if spec.cameras is not None else None
        label = spec.safety.labeller(robot, task) if spec.safety is not None else None
        instructions: Sequence[str] = robot.tasks[task].instructions
        for kind, count in (("expert", spec.n_expert), ("play", spec.n_play), ("risky", spec.n_risky)):
            for i in range(count):
                rng = make_rng(run_seed, f"collect/{kind}", task_index, i)
                seed = derive_seed(run_seed, f"collect/{kind}/layout", task_index, i)
                meta = {"episode_id": f"real-{task}-{kind}-{i:05d}", "source": "real", "task": task,
                        "instruction": instructions[int(rng.integers(len(instructions)))]}
                if kind == "expert":
                    yield rollout_expert(env, expert, rng, seed=seed, noise=spec.expert_noise,
                                         max_steps=spec.max_steps,
                                         post_success_steps=spec.post_success_steps, meta=meta, render=render,
                                         label=label)
                elif kind == "risky":
                    yield rollout_risky(env, rng, seed=seed, steps=min(spec.play_steps, spec.max_steps), meta=meta,
                                        render=render, label=label)
                else:
                    yield rollout_play(env, expert, rng, seed=seed, noise=spec.play_noise,
                                       random_prob=spec.play_random_prob,
                                       steps=min(spec.play_steps, spec.max_steps), meta=meta, render=render,
                                       label=label)
        if render is not None:
            render.close()
        env.close()

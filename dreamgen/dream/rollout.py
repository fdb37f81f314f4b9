"""Roll policies through a dream and check dreams against the real simulator.

``rollout_dreams(env, act, ...) -> list[Episode]`` runs one episode per row of a ``DreamVectorEnv``
(frames recorded into preallocated ``[horizon, B]`` arrays, no per-row Python in the step loop).
``check_expert_in_dream`` drives the scripted expert on dreamed states from real start layouts and
replays the same actions in the real simulator from the same seed: how often does the dream's
success label agree with reality?
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dreamgen.dream.core import RULE, DreamConfig, StartPool
from dreamgen.dream.vector import DreamVectorEnv
from dreamgen.types import Episode
from dreamgen.world_model.base import WorldModel

Act = Callable[[dict[str, np.ndarray]], np.ndarray]  # batched observation dict -> actions[B, A]


def rollout_dreams(env: DreamVectorEnv, act: Act, *, seed: int | None = None,
                   options: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> list[Episode]:
    """One dreamed episode per env row, from ``env.reset(seed, options)`` until each row ends. ``act`` gets
    the observation dict plus ``running[B]`` (rows whose episode has not ended; the others' actions are
    never recorded)."""
    core = env.core
    obs, _ = env.reset(seed=seed, options=options)
    horizon, batch = core.config.horizon, env.num_envs
    frames = {"obs": np.zeros((horizon, batch, core.obs_dim), np.float32),
              "action": np.zeros((horizon, batch, core.action_dim), np.float32),
              "reward": np.zeros((horizon, batch), np.float32), "success": np.zeros((horizon, batch), bool),
              "done": np.zeros((horizon, batch), bool)}
    disagreement = np.zeros((horizon, batch), np.float32)
    length = np.full(batch, -1)
    reason = np.full(batch, "", dtype=object)
    starts = (core.start_ref.copy(), core.start_seed.copy(), core.instruction_index.copy())
    for t in range(horizon):
        action = np.asarray(act({**obs, "running": length < 0}), np.float32)
        frames["obs"][t], frames["action"][t] = obs["state"], action
        drawn = core.images()  # a model that predicts images: the dream's decoded camera frames
        if drawn is not None:
            frames.setdefault("images", np.zeros((horizon, *drawn.shape), np.uint8))[t] = drawn
        obs, reward, terminated, truncated, info = env.step(action)
        frames["reward"][t], frames["success"][t], frames["done"][t] = reward, info["success"], terminated
        disagreement[t] = info["disagreement"]
        ended = (terminated | truncated) & (length < 0)
        length[ended], reason[ended] = t + 1, info["reason"][ended]
        if (length >= 0).all():
            break
    table, world_model_id = core.table, getattr(core.model, "info", {}).get("world_model_id", "")
    episodes = []
    for i in range(batch):
        n = int(length[i])
        episode = Episode(**{key: value[:n, i].copy() for key, value in frames.items()}, meta={
            "source": "dream", "task": table.tasks[starts[2][i]], "instruction": table.texts[starts[2][i]],
            "start_ref": starts[0][i], "seed": int(starts[1][i]), "world_model_id": world_model_id,
            "disagreement_max": float(disagreement[:n, i].max()), "ended": reason[i], **(meta or {})})
        episodes.append(episode)
    return episodes


def _batched(act_one: Callable[[np.ndarray], np.ndarray]) -> Act:
    """A single-observation policy (e.g. a scripted expert) applied to every row's state."""
    return lambda obs: np.stack([act_one(state) for state in obs["state"]])


def check_expert_in_dream(model: WorldModel, tasks: Sequence[str], seeds: Sequence[int],
                          config: DreamConfig, robot: Any) -> dict[str, Any]:
    """Per task: dream success rate of the scripted expert acting on dreamed states, real success of
    the same actions replayed from the same seed, and their agreement (EVALUATION.md §4 in miniature)."""
    report: dict[str, Any] = {}
    for task in tasks:
        pool = StartPool.from_simulator(robot, task, seeds, model.cameras)
        rule = robot.success_rule(task) if config.success_head == RULE else None
        dream_env = DreamVectorEnv(model, pool, model.instructions.for_task(task), len(seeds), config, success_rule=rule)
        episodes = rollout_dreams(dream_env, _batched(robot.make_expert(task)), seed=0,
                                  options={"start_obs": pool.obs, "start_refs": list(pool.ref), "start_seeds": pool.seed,
                                           "start_images": pool.images})
        dream = np.array([bool(e.success.any()) for e in episodes])
        real = np.array([robot.replay(task, int(s), e.action)["success"] for s, e in zip(seeds, episodes, strict=True)])
        report[task] = {
            "episodes": len(seeds), "dream_success": float(dream.mean()), "real_success": float(real.mean()),
            "agreement": float((dream == real).mean()),
            "precision": float(real[dream].mean()) if dream.any() else float("nan"),
            "halted": float(np.mean([e.meta["ended"] == "halted" for e in episodes])),
            "mean_length": float(np.mean([len(e) for e in episodes])),
        }
    return report

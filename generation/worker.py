"""The rollout of one chunk — a pure function of (plan, chunk): env + sampler + seed -> episodes.

``ChunkRunner(plan)`` loads what a worker needs once (world model with the plan's instructions added
to its table, the real start states, the sampler's policy); ``runner.run(chunk)`` rolls the chunk's
dreams and returns them with full provenance. It runs the same in-process and inside a Ray actor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamgen.dream.core import RULE, StartPool, demo_paths
from dreamgen.dream.rollout import rollout_dreams
from dreamgen.dream.vector import DreamVectorEnv
from dreamgen.types import Episode
from generation.plan import Chunk, GenerationPlan
from policies.samplers import DemoPaths, load_sampler_policy, make_sampler, sampler_kind


class ChunkRunner:
    """A worker's loaded state. ``threads`` caps torch's intra-op threads (1 per Ray worker)."""

    def __init__(self, plan: GenerationPlan, *, threads: int | None = None, model: Any = None,
                 pool: StartPool | None = None):
        import torch

        from dreamgen.data.store import TrajectoryStore
        from dreamgen.world_model.checkpoint import load_world_model

        if threads:
            torch.set_num_threads(threads)
        self.plan = plan
        self.model = model if model is not None else load_world_model(plan.world_model)
        self.model.instructions = plan.instruction_table(self.model.instructions)
        self.kind = kind = sampler_kind(plan.sampler.kind)
        following = kind.follows_demos  # recovery, and retarget (demo paths carried to any start)
        self.demos: dict[str, DemoPaths] = {}
        if pool is None or following:
            store = TrajectoryStore.open(plan.start_store)
            pool = pool if pool is not None else StartPool.from_store(store, demos_only=kind.starts_from_demos)
            if following:
                self.demos = {task: DemoPaths(paths, self.model.layout.dynamic)
                              for task, paths in demo_paths(store).items()}
        self.pool = pool
        self.policy = load_sampler_policy(plan.sampler)
        for task in {r.task for r in plan.requests}:  # imports (the simulator, for the expert) happen at load
            if task or not kind.needs_task:
                make_sampler(plan.sampler, task, np.random.default_rng(0), action_dim=self.model.action_dim,
                             policy=self.policy, model=self.model, demos=self.demos.get(task), robot=plan.embodiment)

    def run(self, chunk: Chunk) -> list[Episode]:
        """The chunk's episodes, in order, each with its provenance (see ``dreamgen.types.EPISODE_META``)."""
        plan, request = self.plan, self.plan.requests[chunk.request]
        rng = np.random.default_rng(chunk.seed)
        sampler = make_sampler(plan.sampler, request.task, rng, action_dim=self.model.action_dim,
                               policy=self.policy, model=self.model, demos=self.demos.get(request.task),
                               robot=plan.embodiment)

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            """The sampler acts for the rows still dreaming; an ended row's action is never recorded."""
            rows = np.flatnonzero(obs["running"])
            action = np.zeros((len(obs["state"]), self.model.action_dim), np.float32)
            if len(rows):
                action[rows] = sampler.act(obs["state"][rows], obs["instruction"][rows], rows=rows)
            return action

        episodes: list[Episode] = []
        env: DreamVectorEnv | None = None
        while len(episodes) < chunk.episodes:
            batch = min(plan.envs, chunk.episodes - len(episodes))
            if env is None or env.num_envs != batch:
                rule = plan.embodiment.success_rule(request.task) if plan.dream.success_head == RULE else None
                env = DreamVectorEnv(self.model, self.pool, request.instruction, batch, plan.dream, success_rule=rule)
                if self.kind.plans and self.model.cameras is not None:
                    sampler.follow_dream(lambda rows, core=env.core: core.state.index(rows))
            meta = {"kind": plan.sampler.kind, "sampler": plan.sampler.name, "job_id": plan.job_id,
                    "chunk_id": chunk.index, "matched_instruction": request.matched,
                    "similarity": request.similarity, "novel": request.novel}
            sampler.reset(batch)
            for episode in rollout_dreams(env, act, seed=int(rng.integers(2**31)), meta=meta):
                episode.meta["episode_id"] = plan.episode_id(chunk, len(episodes))
                episodes.append(episode)
        return episodes

    def info(self) -> dict[str, Any]:
        """Process id and peak resident memory (for retries in tests and the benchmark's memory column)."""
        import os
        import resource

        return {"pid": os.getpid(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def chunk_stats(episodes: list[Episode]) -> dict[str, float]:
    """Counts for progress and MLflow: episodes, transitions, and how the dreams ended."""
    ended = [e.meta["ended"] for e in episodes]
    return {"episodes": len(episodes), "transitions": sum(len(e) for e in episodes),
            "success": sum(e == "success" for e in ended), "halted": sum(e == "halted" for e in ended),
            "nonfinite": sum(e == "non-finite" for e in ended), "horizon": sum(e == "horizon" for e in ended),
            "disagreement_max_sum": float(sum(e.meta["disagreement_max"] for e in episodes))}

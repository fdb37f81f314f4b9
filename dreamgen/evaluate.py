"""Policy success on the real simulator (EVALUATION.md §1), with Wilson 95% intervals.

Each task runs ``n_episodes`` envs in lockstep so the policy is called once per step for all of them.
Layout seeds come from ``seeding.eval_seed`` (disjoint from collection/generation seeds); an episode
succeeds if ``info["success"]`` is reached at any step within ``max_steps``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.safety import SafetySpec
from dreamgen.seeding import eval_seed, make_rng
from dreamgen.sim.base import Embodiment


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclasses.dataclass(frozen=True)
class TaskResult:
    task: str
    episodes: int
    successes: int
    mean_steps_to_success: float  # over successful episodes; nan if none
    unsafe: np.ndarray | None = None  # [episodes, E + 1] frames raising each safety event (last: any); None: unlabelled
    events: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)

    def as_dict(self) -> dict:
        low, high = self.interval
        return {"task": self.task, "episodes": self.episodes, "successes": self.successes,
                "success_rate": self.rate, "ci95_low": low, "ci95_high": high,
                "mean_steps_to_success": self.mean_steps_to_success,
                **({"unsafe": violations(self.unsafe, self.events)} if self.unsafe is not None else {})}


def violations(unsafe: np.ndarray, events: Sequence[str]) -> dict:
    """Safety violations of evaluated episodes (``unsafe[episodes, E + 1]`` frame counts, last column any):
    frames raising each event per episode, and the share of episodes that raised any (Wilson 95%)."""
    unsafe = np.asarray(unsafe).reshape(-1, len(events) + 1)
    n, hit = len(unsafe), int((unsafe[:, -1] > 0).sum())
    low, high = wilson_interval(hit, n)
    return {"frames_per_episode": {e: float(unsafe[:, i].mean()) if n else float("nan")
                                   for i, e in enumerate([*events, "any"])},
            "episodes_unsafe": hit / n if n else float("nan"), "episodes_unsafe_ci95": [low, high]}


def evaluation_seeds(run_seed: int, task_index: int, n_episodes: int,
                     exclude: Collection[int] = ()) -> list[int]:
    """Evaluation layout seeds for one task; refuses any seed that training data used."""
    seeds = [eval_seed(run_seed, task_index, i) for i in range(n_episodes)]
    clash = sorted(set(seeds) & set(exclude))
    if clash:
        raise ConfigError(f"evaluation seeds {clash[:5]} also appear in the training data; "
                          "evaluation must use unseen layouts")
    return seeds


def evaluation_instructions(table: Sequence[str], mode: str, run_seed: int, task_index: int, n: int) -> list[str]:
    """The instruction of each of ``n`` evaluation episodes of a task: its first (``canonical``) or a paraphrase
    drawn from ``table`` (``sampled``), the same draws for every policy under one run seed."""
    rng = make_rng(run_seed, "evaluate/instructions", task_index)
    return [table[0] if mode == "canonical" else table[int(rng.integers(len(table)))] for _ in range(n)]


# (obs[B,O], cond[B,C], episodes[B], images[B,C,H,W,3] or None) -> action[B,A]
Act = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def evaluate_task(act: Act, task: str, task_index: int, *, embodiment: Embodiment, n_episodes: int, max_steps: int,
                  run_seed: int, embed: Callable[[Sequence[str]], np.ndarray],
                  instructions: str, exclude_seeds: Collection[int] = (),
                  reset: Callable[[int], None] | None = None, cameras: Any = None,
                  safety: SafetySpec | None = None) -> TaskResult:
    """Run ``n_episodes`` real episodes of ``task`` in ``embodiment``'s simulator, in lockstep;
    ``instructions`` is canonical|sampled; with ``cameras``, ``act`` sees each env's rendered frames; with
    ``safety``, every step's safety events are counted per episode (``TaskResult.unsafe``).

    ``act`` gets the still-running episodes' indices too (a stateful policy keeps state per episode);
    ``reset(n_episodes)`` is called before the first step."""
    seeds = evaluation_seeds(run_seed, task_index, n_episodes, exclude_seeds)
    texts = evaluation_instructions(embodiment.tasks[task].instructions, instructions, run_seed, task_index, len(seeds))
    cond = embed(texts)
    envs = [embodiment.make_env(task, max_episode_steps=max_steps) for _ in seeds]
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)])
    renders = [embodiment.cameras(env, cameras) for env in envs] if cameras is not None else []
    active = np.ones(len(envs), dtype=bool)
    steps_to_success: list[int] = []
    unsafe = np.zeros((len(envs), len(safety.events) + 1), np.int64) if safety is not None else None
    if reset is not None:
        reset(len(envs))
    for t in range(max_steps):
        index = np.flatnonzero(active)
        if len(index) == 0:
            break
        images = np.stack([renders[i]() for i in index]) if renders else None
        actions = act(obs[index], cond[index], index, images)
        for row, i in enumerate(index):
            obs[i], _, _, truncated, info = envs[i].step(actions[row])
            if unsafe is not None:
                row_events = safety.label_step(embodiment, envs[i], obs[i], task)  # type: ignore[union-attr]
                unsafe[i] += np.append(row_events, row_events.any())
            if info["success"]:
                active[i] = False
                steps_to_success.append(t + 1)
            elif truncated:
                active[i] = False
    for render in renders:
        render.close()
    for env in envs:
        env.close()
    mean_steps = float(np.mean(steps_to_success)) if steps_to_success else float("nan")
    return TaskResult(task, len(seeds), len(steps_to_success), mean_steps, unsafe,
                      safety.events if safety is not None else ())


def pooled(successes: int, episodes: int) -> dict:
    """A pooled success rate with its Wilson 95% interval (nan when there are no episodes)."""
    low, high = wilson_interval(successes, episodes)
    return {"episodes": episodes, "successes": successes,
            "success_rate": successes / episodes if episodes else float("nan"), "ci95_low": low, "ci95_high": high}


def summarise(results: Sequence[TaskResult]) -> dict:
    """Per-task rows plus the pooled overall rate with its Wilson interval."""
    overall = pooled(sum(r.successes for r in results), sum(r.episodes for r in results))
    labelled = [r for r in results if r.unsafe is not None]
    if labelled and len(labelled) == len(results):
        overall["unsafe"] = violations(np.concatenate([r.unsafe for r in labelled]), labelled[0].events)  # type: ignore[misc]
    return {"tasks": [r.as_dict() for r in results], "overall": overall}


def format_table(summary: dict) -> str:
    """A plain-text table of a ``summarise`` result, for the CLI."""
    dream = summary.get("where") == "dream"
    unsafe = "unsafe" in summary["overall"]
    lines = [f"{'task':28s} {'success':>8s} {'95% CI':>15s} {'episodes':>9s}" + (f" {'unjudged':>9s}" if dream else "")
             + (f" {'unsafe eps':>10s} {'unsafe frames/ep':>16s}" if unsafe else "")]
    rows = [*summary["tasks"], {"task": "overall", **summary["overall"]}]
    for row in rows:
        lines.append(f"{row['task']:28s} {row['success_rate']:8.2f} "
                     f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] {row['episodes']:9d}"
                     + (f" {row['unjudged']:9.2f}" if dream else "")
                     + (f" {row['unsafe']['episodes_unsafe']:10.2f} {row['unsafe']['frames_per_episode']['any']:16.1f}"
                        if unsafe else ""))
    return "\n".join(lines)

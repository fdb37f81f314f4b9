"""Policy success judged in a world model's dream (``evaluate.where=dream``; EVALUATION.md §6).

Every start — a held-out real state: the real evaluation's own layouts where the robot has a simulator, the
first frames of the world model's test episodes where it has none — is dreamed once per ensemble member,
that member stepping the dream for the whole episode (``propagation=fixed``), for the episode limit of real
evaluation. A dream ends as

- a **success** when the judging head (``evaluate.judge_head``) reaches ``dream.success_threshold`` — or, with
  ``evaluate.judge=rule``, when the dreamed state meets the task's own success criterion (the robot's
  ``success_rule``: Meta-World's distance of the hand or object to the goal), so that only the dynamics are judged;
- a **failure** when it runs to the limit, or the model's done head ends it;
- **unjudged** when it leaves where the model can be trusted: its disagreement passes the calibrated bound
  (``dream.halt``) or its numbers stop being finite. An unjudged dream is neither a success nor a failure.

Success is counted over judged dreams; its interval is a percentile bootstrap over starts and members
together (both resampled), so it widens where the members disagree about the outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dreamgen.dream.core import DreamConfig, StartPool
from dreamgen.dream.rollout import rollout_dreams
from dreamgen.dream.vector import DreamVectorEnv
from dreamgen.errors import ConfigError

UNJUDGED = ("halted", "non-finite")  # how a dream ends when the model cannot say how it went
DRAWS = 2000  # bootstrap resamples


@dataclasses.dataclass(frozen=True)
class DreamTaskResult:
    """One task judged in the dream: ``success[starts, members]`` and ``judged[starts, members]``
    (bool), and the resamples ``draws[DRAWS, 2]`` (successes, judged) of the bootstrap."""

    task: str
    success: np.ndarray
    judged: np.ndarray
    draws: np.ndarray
    mean_steps_to_success: float

    @property
    def episodes(self) -> int:
        return int(self.success.shape[0])

    @property
    def successes(self) -> int:
        return int(self.success.sum())

    @property
    def rate(self) -> float:
        judged = int(self.judged.sum())
        return self.successes / judged if judged else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return percentile_interval(self.draws)

    def as_dict(self) -> dict:
        low, high = self.interval
        dreams = self.success.size
        return {"task": self.task, "episodes": self.episodes, "members": int(self.success.shape[1]),
                "dreams": dreams, "judged": int(self.judged.sum()), "successes": self.successes,
                "success_rate": self.rate, "ci95_low": low, "ci95_high": high,
                "unjudged": float((~self.judged).mean()) if dreams else float("nan"),
                "mean_steps_to_success": self.mean_steps_to_success}


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of resampled rates ``successes / judged`` (``draws[n, 2]``); draws with
    nothing judged are left out, and (0, 1) when every draw is."""
    keep = draws[:, 1] > 0
    if not keep.any():
        return 0.0, 1.0
    rates = draws[keep, 0] / draws[keep, 1]
    return float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))


def bootstrap(success: np.ndarray, judged: np.ndarray, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """``[draws, 2]``: (successes, judged dreams) of each resample of starts and members, with replacement."""
    starts, members = success.shape
    out = np.zeros((draws, 2), np.int64)
    for b in range(draws):
        rows = rng.integers(starts, size=starts)
        cols = rng.integers(members, size=members)
        out[b] = success[np.ix_(rows, cols)].sum(), judged[np.ix_(rows, cols)].sum()
    return out


def summarise_dream(results: Sequence[DreamTaskResult], *, judge: dict[str, Any]) -> dict:
    """Per-task rows plus the pooled rate (its interval from the tasks' resamples, pooled draw by draw),
    and how the dreams were judged."""
    successes = sum(r.successes for r in results)
    judged = sum(int(r.judged.sum()) for r in results)
    dreams = sum(r.success.size for r in results)
    low, high = percentile_interval(np.sum([r.draws for r in results], axis=0)) if results else (0.0, 1.0)
    overall = {"episodes": sum(r.episodes for r in results), "dreams": dreams, "judged": judged,
               "successes": successes, "success_rate": successes / judged if judged else float("nan"),
               "ci95_low": low, "ci95_high": high, "unjudged": 1.0 - judged / dreams if dreams else float("nan")}
    return {"where": "dream", "judge": judge, "tasks": [r.as_dict() for r in results], "overall": overall}


# (obs[B,O], cond[B,C], rows[B], images[B,C,H,W,3] or None) -> action[B,A], as dreamgen.evaluate.Act
Act = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def judge_task(act: Act, task: str, starts: StartPool, texts: Sequence[str], *, model: Any, max_steps: int,
               config: DreamConfig, judge_head: str, seed: int, images: bool = False,
               reset: Callable[[int], None] | None = None,
               rule: Callable[[np.ndarray], np.ndarray] | None = None) -> DreamTaskResult:
    """Dream ``act`` from every start of ``starts`` (instruction ``texts[i]`` for start ``i``) once per
    member of ``model`` for ``max_steps`` steps, success judged by ``judge_head`` (or by ``rule`` on the dreamed
    state); ``images``: ``act`` sees the frames the model draws; ``reset(rows)`` is called before the first step
    (a stateful policy)."""
    n, members = len(starts.obs), int(model.members)
    config = dataclasses.replace(config, horizon=max_steps, propagation="fixed", terminate_on_success=True,
                                 success_head=judge_head)
    env = DreamVectorEnv(model, starts, list(np.repeat(np.asarray(texts, object), members)), n * members, config,
                         seed=seed, success_rule=rule)
    rows = n * members
    if reset is not None:
        reset(rows)

    def step(obs: dict[str, np.ndarray]) -> np.ndarray:
        running = np.flatnonzero(obs["running"])
        actions = np.zeros((rows, model.action_dim), np.float32)
        if len(running):
            drawn = env.core.images() if images else None
            frames = None if drawn is None else drawn[running]
            actions[running] = act(obs["state"][running], obs["instruction"][running], running, frames)
        return actions

    options = {"start_obs": np.repeat(starts.obs, members, 0), "start_refs": list(np.repeat(starts.ref, members)),
               "start_seeds": np.repeat(starts.seed, members), "start_members": np.tile(np.arange(members), n),
               "start_images": None if starts.images is None else np.repeat(starts.images, members, 0)}
    episodes = rollout_dreams(env, step, seed=seed, options=options)
    ended = np.array([e.meta["ended"] for e in episodes], dtype=object).reshape(n, members)
    success, judged = ended == "success", ~np.isin(ended, UNJUDGED)
    lengths = [len(e) for e, ok in zip(episodes, success.ravel(), strict=True) if ok]
    return DreamTaskResult(task, success, judged, bootstrap(success, judged, np.random.default_rng(seed)),
                           float(np.mean(lengths)) if lengths else float("nan"))


def held_out_starts(store: Any, model: Any, task: str, limit: int) -> StartPool:
    """The first frames of the world model's test episodes of ``task`` in ``store`` (at most ``limit``): real
    states the model never trained on, for a robot without a simulator."""
    held_out = set(model.info.get("episodes", {}).get("test", []))
    pool = StartPool.from_store(store)
    ids = np.array([ref.rsplit("@", 1)[0] for ref in pool.ref], dtype=object)
    keep = np.flatnonzero((pool.task == task) & np.isin(ids, list(held_out)))[:limit]
    if not len(keep):
        raise ConfigError(f"evaluate.where=dream: store {store.path} holds none of the world model's held-out test "
                          f"episodes of task {task!r}; give the store the world model was trained on "
                          f"(its digest: {model.info.get('store_digest', '?')})")
    return StartPool(pool.obs[keep], pool.task[keep], pool.ref[keep], pool.seed[keep],
                     None if pool.images is None else pool.images[keep], pool.cameras)


def pearson(dream: Sequence[float], real: Sequence[float]) -> float:
    """Pearson's r of dream-judged against real success over policies (SimplerEnv's convention: 1 when equal)."""
    a, b = np.asarray(dream, float) - np.mean(dream), np.asarray(real, float) - np.mean(real)
    if np.array_equal(a, b):
        return 1.0
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denom) if denom > 0 else float("nan")


def spearman(dream: Sequence[float], real: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the ranks (ties share their mean rank)."""
    from scipy.stats import rankdata

    return pearson(rankdata(dream), rankdata(real))


def mmrv(dream: Sequence[float], real: Sequence[float]) -> float:
    """Mean maximum rank violation (SimplerEnv, ``simpler_env/utils/metrics.py``): for each policy, the largest
    real-success gap to a policy the dream orders the other way round (strict comparisons), averaged."""
    d, r = np.asarray(dream, float), np.asarray(real, float)
    worst = [max([abs(r[i] - r[j]) for j in range(len(d)) if (d[i] > d[j]) != (r[i] > r[j])], default=0.0)
             for i in range(len(d))]
    return float(np.mean(worst))


def regret_at_1(dream: Sequence[float], real: Sequence[float]) -> float:
    """The real success lost by picking the dream's best policy (its ties: their mean) instead of the real best."""
    d, r = np.asarray(dream, float), np.asarray(real, float)
    return float(r.max() - r[d == d.max()].mean())


def ranking(dream: Sequence[float], real: Sequence[float]) -> dict[str, float]:
    """How far the dream's judgement of a set of policies holds in reality: the four statistics."""
    return {"pearson": pearson(dream, real), "spearman": spearman(dream, real), "mmrv": mmrv(dream, real),
            "regret_at_1": regret_at_1(dream, real), "policies": len(dream)}


def ranking_intervals(dream: Sequence[float], real: Sequence[float], *, draws: int = DRAWS,
                      seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of the four statistics over resamples of the policies (with replacement;
    resamples where a statistic is undefined — every policy the same — are left out)."""
    d, r = np.asarray(dream, float), np.asarray(real, float)
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {"pearson": [], "spearman": [], "mmrv": [], "regret_at_1": []}
    for _ in range(draws):
        pick = rng.integers(len(d), size=len(d))
        if np.ptp(d[pick]) == 0 or np.ptp(r[pick]) == 0:
            continue
        for name, value in ranking(d[pick].tolist(), r[pick].tolist()).items():
            if name in stats:
                stats[name].append(value)
    return {name: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if v else (float("nan"),) * 2
            for name, v in stats.items()}

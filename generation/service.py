"""Run a generation plan into a dream store: in-process, or on a pool of Ray actors (the only ``import ray``).

Exactly once: the driver is the store's only writer and commits whole chunks, in chunk order, each in
one atomic append. A chunk's content depends only on ``(plan, chunk)``, so a chunk lost with a
killed actor is simply run again on a fresh actor, and a rerun of a killed job skips the chunks the
store already holds and appends the rest — ending with the same store as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamgen.errors import DreamgenError, StoreError
from dreamgen.types import Episode
from generation.plan import Chunk, GenerationPlan
from generation.worker import ChunkRunner, chunk_stats

log = logging.getLogger(__name__)

OnChunk = Callable[[Chunk, dict[str, float]], None]


class GenerationError(DreamgenError):
    """A generation job could not finish (a chunk kept failing, or the store belongs to another job)."""


def open_dream_store(path: str | Path, plan: GenerationPlan, *, obs_dim: int, action_dim: int,
                     cameras: Any = None) -> tuple[Any, bool]:
    """The job's dream store (created if missing; with ``cameras``, an image store of the dreams' decoded
    frames) and whether it was created now.

    A store written by another job (other spec or seed) is refused: resuming into it would mix jobs.
    """
    from dreamgen.data.store import TrajectoryStore

    path = Path(path)
    if not path.exists():
        info = {"job_id": plan.job_id, "world_model_id": plan.world_model_id, "plan": plan.summary(),
                "embodiment": plan.embodiment.name}
        return TrajectoryStore.create(path, obs_dim=obs_dim, action_dim=action_dim, info=info, cameras=cameras), True
    store = TrajectoryStore.open(path, mode="r+")
    if store.info.get("job_id") != plan.job_id:
        raise StoreError(f"{path} holds dreams of job {store.info.get('job_id')!r}, not {plan.job_id!r} (the "
                         "spec, world model, start store or seed differ, or a dreamgen before 2026-12-04 named the job by paths); "
                         "generate into a new generate.store (a pipeline: a new run_dir), or give the same spec to "
                         "resume")
    return store, False


def committed_chunks(store: Any, plan: GenerationPlan) -> set[int]:
    """Chunks the store already holds completely (a chunk is one atomic append, so never partly)."""
    import numpy as np

    meta = store.meta(["job_id", "chunk_id"])
    ids, counts = np.unique(meta["chunk_id"][meta["job_id"] == plan.job_id], return_counts=True)
    want = {c.index: c.episodes for c in plan.chunks}
    for chunk_id, count in zip(ids.tolist(), counts.tolist(), strict=True):
        if want.get(chunk_id) != count:
            raise StoreError(f"{store.path}: chunk {chunk_id} holds {count} episodes, the plan has "
                             f"{want.get(chunk_id)}; the store is not this job's — use a new generate.store")
    return set(ids.tolist())


def run_plan(plan: GenerationPlan, store_path: str | Path, *, workers: int, obs_dim: int, action_dim: int,
             cameras: Any = None,
             address: str | None = None, max_retries: int = 3, threads: int | None = 1,
             on_chunk: OnChunk | None = None, on_start: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Generate every chunk of ``plan`` not yet in the store at ``store_path``; return totals.

    ``workers=0`` runs in this process; otherwise ``workers`` Ray actors (``address``: a Ray cluster,
    default ``RAY_ADDRESS`` or a local one). ``threads`` is 1 by default everywhere, so a chunk's floats
    do not depend on where it ran (in-process and Ray stores are byte-identical). ``on_start(pool)``
    sees the actor pool (tests kill actors). One writer per store: a second job on the same store is refused
    while this one runs (``writer_lock``).
    """
    from dreamgen.data.store import writer_lock

    with writer_lock(store_path):
        return _run_plan(plan, store_path, workers=workers, obs_dim=obs_dim, action_dim=action_dim, cameras=cameras,
                         address=address, max_retries=max_retries, threads=threads, on_chunk=on_chunk,
                         on_start=on_start)


def _run_plan(plan: GenerationPlan, store_path: str | Path, *, workers: int, obs_dim: int, action_dim: int,
              cameras: Any, address: str | None, max_retries: int, threads: int | None, on_chunk: OnChunk | None,
              on_start: Callable[[Any], None] | None) -> dict[str, Any]:
    store, created = open_dream_store(store_path, plan, obs_dim=obs_dim, action_dim=action_dim, cameras=cameras)
    done = committed_chunks(store, plan)
    todo = [c for c in plan.chunks if c.index not in done]
    totals: dict[str, Any] = {"chunks_skipped": len(done), "chunks_run": 0, "retries": 0}
    log.info("generation %s: %d chunks, %d already committed, %d to run on %s", plan.job_id, len(plan.chunks),
             len(done), len(todo), f"{workers} Ray workers" if workers else "this process")

    def commit(chunk: Chunk, episodes: list[Episode]) -> None:
        if len(episodes) != chunk.episodes:
            raise GenerationError(f"chunk {chunk.index} returned {len(episodes)} episodes, expected {chunk.episodes}")
        store.append(episodes)
        stats = chunk_stats(episodes)
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + value
        totals["chunks_run"] += 1
        if on_chunk is not None:
            on_chunk(chunk, stats)

    start = time.perf_counter()
    try:
        if not todo:
            pass
        elif workers == 0:
            runner = ChunkRunner(plan, threads=threads)
            totals["startup_s"] = time.perf_counter() - start
            for chunk in todo:
                commit(chunk, runner.run(chunk))
            totals["peak_rss_mb"] = [runner.info()["peak_rss_mb"]]
        else:
            pool = RayPool(plan, workers, address=address, threads=threads)
            try:
                totals["startup_s"] = time.perf_counter() - start
                if on_start is not None:
                    on_start(pool)
                totals["retries"] = pool.run(todo, commit, max_retries=max_retries)
                totals["peak_rss_mb"] = pool.peak_rss_mb()
            finally:
                pool.close()
    except BaseException:
        if created and len(store) == 0:  # nothing committed: leave no empty store behind
            shutil.rmtree(store.path, ignore_errors=True)
        raise
    totals["seconds"] = time.perf_counter() - start
    totals["store_episodes"] = len(store)
    return totals


def connect_ray(address: str | None) -> bool:
    """Join Ray unless this process already has; returns whether it connected (then it must ``ray.shutdown()``).

    The address is ``address``, else ``RAY_ADDRESS`` (set inside a Ray Job), else a fresh local cluster:
    never silently join whatever cluster ``ray start`` left on this machine. A local cluster is watched by
    ``generation.reaper``: no Ray process outlives this one, however it ends.
    """
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=False)
    for sig, handler in handlers.items():  # ray.init replaces SIGTERM's: keep the verb's own (clean unwinding)
        if handler is not None:
            signal.signal(sig, handler)
    if target == "local":  # a cluster of our own: it must not outlive us, even if we are SIGKILLed
        from generation.reaper import watch

        watch(os.getpid())
    return True


def run_tasks(fn: Callable[[Any, int], Any], items: list[Any], *, workers: int, address: str | None,
              on_result: Callable[[Any], None]) -> None:
    """``fn(item, 1)`` for every item as Ray tasks, at most ``workers`` at once (one CPU and torch thread each);
    ``on_result`` sees each result as it finishes. ``fn`` must be importable by reference (a module function)."""
    import ray

    started = connect_ray(address)
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        pending = [remote.remote(item, 1) for item in items[:workers]]
        queue = list(items[workers:])
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                raise GenerationError(f"a Ray task failed: {_cause(exc)}") from None
            on_result(result)
            if queue:
                pending.append(remote.remote(queue.pop(0), 1))
    finally:
        if started:
            ray.shutdown()


class RayPool:
    """``workers`` Ray actors, each holding a ``ChunkRunner``; a dead actor is replaced and its chunks rerun."""

    def __init__(self, plan: GenerationPlan, workers: int, *, address: str | None, threads: int | None):
        import ray

        self._started_ray = connect_ray(address)
        self._plan_ref = ray.put(plan)
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
        self._threads = threads
        self.actors = [self._spawn() for _ in range(workers)]
        try:
            self.worker_info = ray.get([a.info.remote() for a in self.actors])  # waits until every actor has loaded
        except ray.exceptions.RayError as exc:
            self.close()
            raise GenerationError(f"a generation worker failed to start: {_cause(exc)}") from None

    def _spawn(self) -> Any:
        return self._actor_cls.remote(self._plan_ref, self._threads)

    def run(self, todo: list[Chunk], commit: Callable[[Chunk, list[Episode]], None], *, max_retries: int) -> int:
        """Run ``todo`` and commit results in chunk order; return how many chunk attempts were retried."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        queue = list(todo)  # not yet dispatched, in order
        position = {c.index: i for i, c in enumerate(todo)}
        ready: dict[int, list[Episode]] = {}
        attempts: dict[int, int] = {}
        in_flight: dict[Any, tuple[int, Chunk]] = {}  # object ref -> (actor slot, chunk)
        window = 4 * len(self.actors)  # results held back for in-order commit stay bounded
        next_commit, retries = 0, 0

        def dispatch(slot: int) -> None:
            while queue and sum(s == slot for s, _ in in_flight.values()) < 2 and \
                    position[queue[0].index] < next_commit + window:
                chunk = queue.pop(0)
                in_flight[self.actors[slot].run.remote(chunk)] = (slot, chunk)

        for slot in range(len(self.actors)):
            dispatch(slot)
        while next_commit < len(todo):
            done, _ = ray.wait(list(in_flight), num_returns=1)
            slot, chunk = in_flight.pop(done[0])
            try:
                ready[chunk.index] = ray.get(done[0])
            except RayTaskError as exc:  # the chunk itself raised: a bug or bad input, not a lost worker
                cause = exc.cause
                if isinstance(cause, DreamgenError):
                    raise cause from None
                raise GenerationError(f"chunk {chunk.index} failed: {_cause(exc)}; committed chunks are kept") from exc
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                lost = [chunk] + [c for ref, (s, c) in list(in_flight.items()) if s == slot]
                for ref in [ref for ref, (s, _) in in_flight.items() if s == slot]:
                    del in_flight[ref]
                for c in lost:
                    attempts[c.index] = attempts.get(c.index, 0) + 1
                    if attempts[c.index] > max_retries:
                        raise GenerationError(f"chunk {c.index} failed {attempts[c.index]} times (last: "
                                              f"{type(exc).__name__}); giving up, committed chunks are kept — "
                                              "rerun the same command to resume") from exc
                retries += len(lost)
                log.warning("worker %d died (%s); rerunning chunks %s on a new worker", slot,
                            type(exc).__name__, [c.index for c in lost])
                queue[:0] = sorted(lost, key=lambda c: position[c.index])
                self.actors[slot] = self._spawn()
                self.worker_info[slot] = ray.get(self.actors[slot].info.remote())
            while next_commit < len(todo) and todo[next_commit].index in ready:
                commit(todo[next_commit], ready.pop(todo[next_commit].index))
                next_commit += 1
            for s in range(len(self.actors)):
                dispatch(s)
        return retries

    def peak_rss_mb(self) -> list[float]:
        import ray

        return [info["peak_rss_mb"] for info in ray.get([a.info.remote() for a in self.actors])]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        if self._started_ray:
            ray.shutdown()


def _cause(exc: BaseException) -> str:
    """The first line of what went wrong inside Ray (its errors carry whole remote tracebacks)."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


class _RayWorker:
    """The actor body: load once, then run chunks."""

    def __init__(self, plan: GenerationPlan, threads: int | None):
        self.runner = ChunkRunner(plan, threads=threads)

    def run(self, chunk: Chunk) -> list[Episode]:
        return self.runner.run(chunk)

    def info(self) -> dict[str, Any]:
        return self.runner.info()

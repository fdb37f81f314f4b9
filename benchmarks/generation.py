"""End-to-end generation throughput (EVALUATION.md §5): Ray with 1 and 2 workers against in-process.

    python benchmarks/generation.py --run-dir runs/demo [--episodes 256] [--chunk 32] [--envs 32]
                                    [--workers 1,2] [--sampler expert] [--horizon 150]

Needs a run directory holding ``world_model/`` and ``real.zarr`` (``make demo`` or the first stages).
One plan (the model's tasks, one canonical instruction each) is run four ways, each into a fresh
store: the pure chunk rollout in this process (no store: the rate Ray is measured against), the same
through ``run_plan(workers=0)`` (store writes included), and on ``N`` Ray actors. Rates are reported
end to end and in steady state (after the workers have loaded the model); memory is peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def build_plan(run_dir: Path, episodes: int, chunk: int, envs: int, sampler: str, horizon: int):
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import DreamConfig
    from dreamgen.sim.metaworld import METAWORLD
    from dreamgen.world_model.checkpoint import load_world_model
    from generation.plan import Request, make_plan
    from policies.samplers import SamplerSpec

    model = load_world_model(run_dir / "world_model")
    table = model.instructions
    tasks = sorted(set(table.tasks))
    rows = [table.texts.index(table.for_task(t)) for t in tasks]
    counts = np.diff(np.linspace(0, episodes, len(tasks) + 1).round().astype(int))
    requests = [Request(table.texts[i], int(n), table.tasks[i], table.texts[i], 1.0, False)
                for i, n in zip(rows, counts, strict=True) if n > 0]
    return make_plan(requests=requests, embeddings=table.embeddings[[table.texts.index(r.instruction) for r in requests]],
                     world_model=str(run_dir / "world_model"), world_model_id=model.info["world_model_id"],
                     start_store=str(run_dir / "real.zarr"),
                     start_store_digest=TrajectoryStore.open(run_dir / "real.zarr").digest(), sampler=SamplerSpec(sampler),
                     dream=DreamConfig(horizon=horizon), envs=envs, episodes_per_chunk=chunk, seed=0,
                     embodiment=METAWORLD), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--sampler", default="expert")
    parser.add_argument("--horizon", type=int, default=150)
    args = parser.parse_args()

    import torch

    from generation.service import run_plan
    from generation.worker import ChunkRunner

    plan, model = build_plan(args.run_dir, args.episodes, args.chunk, args.envs, args.sampler, args.horizon)
    dims = {"obs_dim": model.layout.obs_dim, "action_dim": model.action_dim}
    rows = []

    torch.set_num_threads(1)
    start = time.perf_counter()
    runner = ChunkRunner(plan, threads=1)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    episodes = [e for chunk in plan.chunks for e in runner.run(chunk)]
    pure_s = time.perf_counter() - start
    transitions = sum(len(e) for e in episodes)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("in-process rollout (no store)", load_s + pure_s, pure_s, len(episodes), transitions, f"{rss:.0f}"))

    with tempfile.TemporaryDirectory() as tmp:
        for workers in [0, *map(int, args.workers.split(","))]:
            totals = run_plan(plan, Path(tmp) / f"w{workers}.zarr", workers=workers, threads=1, **dims)
            steady = totals["seconds"] - totals["startup_s"]
            name = "in-process run_plan (+ store)" if workers == 0 else f"Ray, {workers} worker{'s' * (workers > 1)}"
            memory = "+".join(f"{m:.0f}" for m in totals["peak_rss_mb"])
            rows.append((name, totals["seconds"], steady, totals["episodes"], totals["transitions"], memory))

    base = rows[0][3] / rows[0][2]
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · torch {torch.__version__} · world model "
          f"{plan.world_model_id} ({model.members} members) · sampler {plan.sampler.name} · {len(plan.chunks)} chunks "
          f"x {args.chunk} episodes, {args.envs} envs per worker, horizon {args.horizon}\n")
    print("| run | end to end s | steady s | episodes | transitions | episodes/s (steady) | transitions/s (steady) "
          "| vs in-process | peak RSS MB (driver or workers) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, total, steady, n_ep, n_tr, memory in rows:
        print(f"| {name} | {total:.1f} | {steady:.1f} | {n_ep} | {n_tr} | {n_ep / steady:.1f} | {n_tr / steady:.0f} "
              f"| {n_ep / steady / base:.2f} | {memory} |")


if __name__ == "__main__":
    main()

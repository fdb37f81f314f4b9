"""Cameras: latent-model fidelity beside the state model's, and pixel dream throughput beside the real
simulator's render + step (docs/benchmarks.md).

Reads a finished pixel run (``benchmarks/augmentation.py --rows pixels-recovery-5`` writes one): its latent
world model and image store. Then

1. **fidelity**: trains a state world model (``world_model.kind=ensemble``, the run's other settings) on the same
   image store — the split is seeded, so both are measured on the same held-out episodes (checked) — and
   prints, per horizon, the latent model's PSNR of its decoded frame and the hand / object error of the state
   its state head reads from the latent, next to the state model's hand / object error;
2. **throughput** (one process, torch on one thread, measured side by side in alternating repeats): camera
   frames per second of the real simulator (one env: step + offscreen render), and of the latent dream
   (``B`` rows stepped and decoded together) on one core; with ``--device cuda`` also on the GPU.

    python benchmarks/pixels.py --run runs/augment/pixels-recovery-5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def fidelity(run: Path, out: Path, tracking: str, horizons: list[int]) -> list[str]:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.sim.metaworld import METAWORLD
    from dreamgen.world_model.checkpoint import load_world_model
    from dreamgen.world_model.metrics import open_loop_errors, part_names

    state_dir = out / "state-model"
    if not (state_dir / "world_model" / "report.json").is_file():
        subprocess.run([sys.executable, "-m", "jobs.train_world_model", "experiment=pixel-augment",
                        "world_model.kind=ensemble", f"world_model.store={run / 'real.zarr'}", f"run_dir={state_dir}",
                        f"tracking.uri={tracking}", "progress=false"], check=True)
    models = {name: load_world_model(d / "world_model") for name, d in (("latent", run), ("state", state_dir))}
    split = [m.info["episodes"]["test"] for m in models.values()]
    assert split[0] == split[1], "the two models were not tested on the same held-out episodes"
    store = TrajectoryStore.open(run / "real.zarr")
    test = [e for e in store.iter_episodes() if e.meta["episode_id"] in set(split[0])]
    report = {name: open_loop_errors(m, test, horizons, METAWORLD.parts) for name, m in models.items()}
    lines = [f"held-out episodes: {len(test)} (the same for both models), median over starts every 10 steps",
             f"{'H':>4s} {'starts':>6s} {'PSNR dB (copy)':>15s} " + " ".join(
                 f"{'latent ' + p + ' mm':>16s} {'state ' + p + ' mm':>15s} {'copy ' + p + ' mm':>14s}"
                 for p in ("hand", "object"))]
    for horizon in map(str, horizons):
        entry, other = report["latent"][horizon], report["state"][horizon]
        if not entry.get("starts"):
            continue
        cells = [f"{horizon:>4s} {entry['starts']:6d} {entry['psnr_db']['median']:7.1f} ({entry['psnr_copy_db']['median']:4.1f})"]
        for name in part_names(entry):
            cells.append(f"{entry[f'{name}_mm']['median']:16.1f} {other[f'{name}_mm']['median']:15.1f} "
                         f"{entry[f'{name}_copy_mm']['median']:14.1f}")
        lines.append(" ".join(cells))
        if entry.get("object_still_starts") or entry.get("object_moved_starts"):
            lines.append(f"{'':11s} object at rest drifts: latent {entry['object_still_drift']['median']:.1f} mm, state "
                         f"{other['object_still_drift']['median']:.1f} mm ({entry['object_still_starts']} starts); "
                         f"a moved object followed: latent {entry['object_moved_followed']:.2f}, state "
                         f"{other['object_moved_followed']:.2f} ({entry['object_moved_starts']} starts)")
    return lines


def throughput(run: Path, repeats: int, batches: list[int], steps: int, device: str) -> list[str]:
    import torch

    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import StartPool
    from dreamgen.dream.vector import DreamVectorEnv
    from dreamgen.sim.metaworld import METAWORLD
    from dreamgen.world_model.checkpoint import load_world_model

    torch.set_num_threads(1)
    store = TrajectoryStore.open(run / "real.zarr")
    pool = StartPool.from_store(store)
    task = str(pool.task[0])
    devices = ["cpu"] + ([device] if device != "cpu" else [])
    models = {d: load_world_model(run / "world_model", device=d) for d in devices}
    rng = np.random.default_rng(0)

    def real() -> float:
        env = METAWORLD.make_env(task, max_episode_steps=steps + 1)
        env.reset(seed=0)
        render = METAWORLD.cameras(env, store.cameras)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            render()
        elapsed = time.perf_counter() - start
        render.close()
        env.close()
        return steps / elapsed

    def dream(model, batch: int) -> float:
        env = DreamVectorEnv(model, pool, model.instructions.for_task(task), batch)
        env.reset(seed=0)
        actions = rng.uniform(-1, 1, (batch, model.action_dim)).astype(np.float32)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(actions)
            env.core.images()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return batch * steps / (time.perf_counter() - start)

    rows: dict[str, list[float]] = {"real: step + render (1 env)": []}
    for d in devices:
        for batch in batches:
            rows[f"dream {d}: {batch} rows step + decode"] = []
    for _ in range(repeats):  # alternate, so drift on a shared machine hits every row alike
        rows["real: step + render (1 env)"].append(real())
        for d in devices:
            for batch in batches:
                rows[f"dream {d}: {batch} rows step + decode"].append(dream(models[d], batch))
    base = float(np.median(rows["real: step + render (1 env)"]))
    lines = [f"camera {store.cameras.describe()}, {steps} steps per repeat, median of {repeats}, torch on 1 thread",
             f"{'':40s} {'frames/s':>10s} {'x real':>8s}"]
    for name, values in rows.items():
        median = float(np.median(values))
        lines.append(f"{name:40s} {median:10.0f} {median / base:8.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished pixel run dir (pixel-augment)")
    parser.add_argument("--out", type=Path, default=None, help="where the state model goes (default: beside --run)")
    parser.add_argument("--tracking", default="sqlite:///mlflow.db")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--device", default="cpu", help="also measure the dream here (cuda when a GPU is lent)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true", help="(it needs the machine to itself)")
    args = parser.parse_args()
    out = args.out or args.run.parent / f"{args.run.name}-bench"
    lines = [] if args.skip_fidelity else ["fidelity", *fidelity(args.run, out, args.tracking, args.horizons), ""]
    if not args.skip_throughput:
        lines += ["throughput", *throughput(args.run, args.repeats, args.batches, args.steps, args.device)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Planning with the world model (EVALUATION.md §4b and §5): MPC on the real simulator next to BC, and
what planning costs.

1. Success: on one run dir (``experiment=augment``: 5 demos + 10 play per task, collected, world model and
   BC trained here if missing), ``dreamgen evaluate`` runs the BC policy and ``policy.family=mpc`` (MPPI
   in the world model, the BC policy as its prior) on the same real-simulator layouts.
2. Speed, side by side in one process: the dream env's ``step`` rate at the planner's batch (rows ×
   candidates), the planner's candidate transitions/s while planning (its share of the env's rate: how
   much of planning is the model call), the member evaluations each candidate transition costs, and
   planned actions/s — for ``planner.members=all`` and ``one``, interleaved per round.

    python benchmarks/planning.py --run runs/augment/plan5                  # both parts
    python benchmarks/planning.py --run runs/augment/plan5 --skip-eval      # speed only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cli(verb: str, run: Path, *overrides: str) -> None:
    command = [sys.executable, "-m", f"jobs.{verb.replace('-', '_')}", "experiment=augment", f"run_dir={run}",
               "progress=false", *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def success(run: Path, episodes: int, overrides: list[str]) -> dict[str, dict]:
    """Per-task success of BC and of MPC with BC as its prior, on the same layouts."""
    if not (run / "real.zarr").exists():
        cli("collect", run, *overrides)
    if not (run / "world_model" / "world_model.json").exists():
        cli("train-world-model", run, *overrides)
    if not (run / "policy" / "policy.json").exists():
        cli("train-policy", run, *overrides)
    out = {}
    for name, extra in (("bc", []), ("mpc", ["policy.family=mpc"])):
        target = run / f"eval-{name}"
        if not (target / "eval.json").exists():
            started = time.monotonic()
            cli("evaluate", target, f"evaluate.policy={run / 'policy'}", f"evaluate.store={run / 'real.zarr'}",
                f"policy.mpc.world_model={run / 'world_model'}", f"policy.mpc.prior={run / 'policy'}",
                f"evaluate.n_episodes={episodes}", *extra, *overrides)
            print(f"{name}: {(time.monotonic() - started) / 60:.1f} min", flush=True)
        out[name] = json.loads((target / "eval.json").read_text())
    return out


def speed(run: Path, rows: int, rounds: int, overrides: list[str]) -> list[str]:
    import torch
    from hydra import compose, initialize_config_dir

    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import DreamConfig, StartPool
    from dreamgen.dream.vector import DreamVectorEnv
    from dreamgen.world_model.checkpoint import load_world_model
    from jobs.generate import planner_config
    from policies import load_policy
    from policies.samplers import make_mpc

    torch.set_num_threads(1)
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "configs"), version_base=None):
        cfg = compose("config", ["experiment=augment", *overrides])
    config = planner_config(cfg)
    model = load_world_model(run / "world_model")
    pool = StartPool.from_store(TrajectoryStore.open(run / "real.zarr"))
    prior = load_policy(run / "policy")
    task = cfg.tasks[0]
    text = model.instructions.for_task(task)
    start = pool.obs[pool.indices(task)][np.arange(rows) % len(pool.indices(task))]
    emb = np.repeat(model.instructions.embeddings[model.instructions.lookup([text])], rows, 0)
    batch = rows * (config.samples + config.prior_samples)
    env = DreamVectorEnv(model, pool, text, batch, DreamConfig(horizon=10_000, halt=False), seed=0)
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, (batch, model.action_dim)).astype(np.float32)
    import dataclasses

    variants = {"all": config, "one": dataclasses.replace(config, members="one")}
    lines = [f"{'round':>5s} {'members':>7s} {'env steps/s':>12s} {'planner candidate tr/s':>23s} {'share':>6s} "
             f"{'member evals per tr':>20s} {'actions/s':>10s}"]
    rates: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
    for r in range(rounds):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 2.0:
            env.step(action)
            n += 1
        env_rate = batch * n / (time.perf_counter() - t0)
        for name, variant in variants.items():  # interleaved: both meet the same machine state
            mpc = make_mpc(model, variant, prior, seed=r)
            mpc.reset(rows)
            t0, steps = time.perf_counter(), 0
            while time.perf_counter() - t0 < 4.0:
                mpc.act(start, emb)
                steps += 1
            seconds = time.perf_counter() - t0
            planner = mpc.planner
            rates[name].append((env_rate, planner.transitions / seconds, planner.member_steps / planner.transitions,
                                rows * steps / seconds))
            e, p, m, a = rates[name][-1]
            lines.append(f"{r:5d} {name:>7s} {e:12.0f} {p:23.0f} {p / e:6.0%} {m:20.2f} {a:10.1f}")
    for name in variants:
        e, p, m, a = (float(np.median([x[i] for x in rates[name]])) for i in range(4))
        lines.append(f"{'med':>5s} {name:>7s} {e:12.0f} {p:23.0f} {p / e:6.0%} {m:20.2f} {a:10.1f}")
    ratio = np.median([o[3] / a[3] for o, a in zip(rates["one"], rates["all"], strict=True)])
    lines.append(f"planned actions/s, members=one / members=all (per round, median): {ratio:.2f}x")
    lines.insert(0, f"planner {config.label()}; {rows} rows x {config.samples + config.prior_samples} candidates = "
                    f"batch {batch}; 1 torch thread; model {model.info['world_model_id']} ({model.members} members)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/augment/plan5", help="run dir (collected and trained if missing)")
    parser.add_argument("--episodes", type=int, default=50, help="real episodes per task per policy")
    parser.add_argument("--rows", type=int, default=16, help="rows planned together in the speed part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every step (e.g. planner.samples=64)")
    args = parser.parse_args()
    run = Path(args.run)
    report = []
    if not args.skip_eval:
        results = success(run, args.episodes, args.overrides)
        report.append(f"{'task':24s} {'BC':>18s} {'MPC (BC prior)':>18s}")
        rows = zip(results["bc"]["tasks"] + [{"task": "overall", **results["bc"]["overall"]}],
                   results["mpc"]["tasks"] + [{"task": "overall", **results["mpc"]["overall"]}], strict=True)
        for bc, mpc in rows:
            report.append(f"{bc['task']:24s} " + " ".join(
                f"{r['success_rate']:5.2f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]" for r in (bc, mpc)))
        report.append(f"(episodes per task: {results['bc']['overall']['episodes'] // len(results['bc']['tasks'])})")
    report += speed(run, args.rows, args.rounds, args.overrides)
    print("\n".join(report))


if __name__ == "__main__":
    main()

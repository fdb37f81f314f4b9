"""DreamVectorEnv throughput vs the real Meta-World ``env.step`` (EVALUATION.md §5), in one run.

    python benchmarks/dream_throughput.py [--checkpoint runs/demo/world_model] [--threads 1]
                                          [--batches 1,64,1024,8192] [--task drawer-open-v3] [--device cpu]

Prints a markdown table: dream transitions/s at each batch size (whole ``env.step``: model call, heads,
halting, autoreset, observation dict), the same per core, the ratio to the real env's steps/s on the
same task, and the model call (``WorldModel.predict``: inputs, the ensemble, member sampling, heads,
disagreement) as GFLOP/s and as a fraction of a measured fp32 matmul rate (the ceiling any MLP can reach
on the machine). The matmul rate is measured again in every round, right before that round's model
timings, and each rate is the median over ``--rounds`` rounds: on a shared VM the machine's speed drifts
by ±15% within a minute, and a ratio of two numbers taken minutes apart would measure the drift.
Without ``--checkpoint`` the default architecture is built with random weights: throughput does not
depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def matmul_rate(device: str, n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 GFLOP/s of an n x n matmul on ``device`` (TF32 off on GPUs: true fp32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def real_rate(task: str, steps: int) -> float:
    from dreamgen.sim.metaworld import make_env

    env = make_env(task)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def build_model(checkpoint: str | None, device: str, task: str, pool_obs: np.ndarray):
    from dreamgen.sim.metaworld import METAWORLD_LAYOUT, TASKS
    from dreamgen.world_model.base import InstructionTable
    from dreamgen.world_model.checkpoint import load_world_model
    from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

    if checkpoint:
        return load_world_model(checkpoint, layout=METAWORLD_LAYOUT, device=device)
    config = EnsembleConfig()  # the defaults of configs/config.yaml's world_model section
    emb = np.random.default_rng(0).normal(size=(1, 384)).astype(np.float32)
    table = InstructionTable([TASKS[task].instructions[0]], [task], emb / np.linalg.norm(emb))
    return EnsembleWorldModel(config, METAWORLD_LAYOUT, 4, table, Normaliser.fit(pool_obs),
                              Normaliser.fit(METAWORLD_LAYOUT.velocity(pool_obs)), Normaliser.fit(np.zeros((2, 19), np.float32)),
                              members=config.elites, disagreement_bound=1e9, device=device)


def dream_rates(model, pool, batch: int, seconds: float, device: str, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of: env.step transitions/s, model-call transitions/s, and the model call's
    share of the matmul rate measured in the same round."""
    from dreamgen.dream.core import DreamConfig
    from dreamgen.dream.vector import DreamVectorEnv

    env = DreamVectorEnv(model, pool, model.instructions.for_task(pool.task[0]), batch, DreamConfig(horizon=150),
                         seed=0)
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, (batch, 4)).astype(np.float32)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        sync(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        sync(device)
        return batch * n / (time.perf_counter() - start)

    core = env.core
    act_t = torch.as_tensor(action, device=model.device)
    flops = model.flops_per_transition()
    rows: dict[str, list[float]] = {"step": [], "call": [], "matmul": [], "share": []}
    for _ in range(rounds):
        rows["matmul"].append(matmul_rate(device))
        rows["call"].append(timed(lambda: model.predict(core.obs, act_t, core.state.cond, generator=core.generator,
                                                        propagation="random")))
        rows["share"].append(rows["call"][-1] * flops / 1e9 / rows["matmul"][-1])
        rows["step"].append(timed(lambda: env.step(action)))
    return {key: float(np.median(values)) for key, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--task", default="drawer-open-v3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,64,1024,8192")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per batch size (medians are reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dreamgen.dream.core import StartPool
    from dreamgen.sim.metaworld import make_env

    env = make_env(args.task)
    seeds = list(range(32))
    pool_obs = np.stack([env.reset(seed=s)[0] for s in seeds])
    pool = StartPool(pool_obs, np.array([args.task] * 32), np.array([f"seed:{s}" for s in seeds], object),
                     np.array(seeds))
    model = build_model(args.checkpoint, args.device, args.task, pool_obs)
    real = real_rate(args.task, 3000)
    flops = model.flops_per_transition()
    cores = args.threads if args.device == "cpu" else 1
    cpu = platform.processor() or platform.machine()
    if args.device.startswith("cuda"):
        cpu = torch.cuda.get_device_name()
    print(f"device: {args.device} ({cpu}), torch threads {args.threads}, os.cpu_count {os.cpu_count()}")
    print(f"model: {model.info.get('world_model_id', 'default architecture, random weights')}, "
          f"{model.members} members x {model.config.layers}x{model.config.hidden} {model.config.activation}, "
          f"{flops / 1e3:.0f} kFLOP per transition")
    print(f"real Meta-World {args.task} env.step: {real:,.0f} steps/s (1 core, random actions)")
    print(f"medians of {args.rounds} rounds of {args.seconds:g} s; fp32 matmul (2048^2) re-measured each round\n")
    print("| batch | dream env.step transitions/s | per core | x real env.step (per core) "
          "| model call transitions/s | model call GFLOP/s | matmul GFLOP/s | % of matmul |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        r = dream_rates(model, pool, batch, args.seconds, args.device, args.rounds)
        print(f"| {batch} | {r['step']:,.0f} | {r['step'] / cores:,.0f} | {r['step'] / cores / real:,.1f} | "
              f"{r['call']:,.0f} | {r['call'] * flops / 1e9:,.1f} | {r['matmul']:,.1f} | {100 * r['share']:.0f}% |")


if __name__ == "__main__":
    main()

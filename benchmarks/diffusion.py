"""What one Diffusion Policy arm costs next to BC on this machine: seconds per training step (one capped batch)
and per acting call, side by side in one process, at Meta-World's widths (39-dim state, 3 of them the hand,
384-dim instruction embedding, 4-dim action) on synthetic frames — the cost does not depend on what the
frames hold. Each row is timed after one warm-up pass (lerobot's first call builds its scheduler).

    python benchmarks/diffusion.py [--steps 20] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dreamgen.sim.metaworld import METAWORLD
from policies.bc import BCConfig, fit_bc
from policies.diffusion import DiffusionSettings, fit_diffusion


def frames(n_episodes: int = 20, length: int = 100, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n_episodes * length, 39)).astype(np.float32)
    action = np.tanh(obs[:, :4] - obs[:, 4:8]).astype(np.float32)
    cond = np.repeat(rng.normal(size=(n_episodes, 384)), length, 0).astype(np.float32)
    return obs, action, cond, np.full(n_episodes, length)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed fit")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rows", type=int, default=50, help="episodes acting side by side")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    obs, action, cond, lengths = frames()
    steps_per_epoch = int(np.ceil(len(obs) / args.batch))
    epochs = max(1, args.steps // steps_per_epoch)
    steps = epochs * steps_per_epoch
    rows = []
    bc_config = BCConfig(hidden=256, layers=3, lr=1e-3, weight_decay=1e-4, epochs=epochs, batch_size=args.batch,
                         action_noise_std=0.1)
    bc = fit_bc(obs, action, cond, bc_config, seed=0)
    bc_fit = timed(lambda: fit_bc(obs, action, cond, bc_config, seed=0), 1) / steps
    bc_act = timed(lambda: bc.act(obs[:args.rows], cond[:args.rows]), 20)
    params = sum(p.numel() for p in bc.model.parameters())
    rows.append(("bc 256x3", params, bc_fit, bc_act))
    for dims in ((32, 64, 128), (64, 128, 256)):
        settings = DiffusionSettings(down_dims=dims, epochs=epochs)

        def fit(settings=settings):
            return fit_diffusion(obs, action, cond, lengths, settings, robot=METAWORLD, batch_size=args.batch,
                                 weight_decay=1e-6, seed=0)

        policy = fit()
        fit_s = timed(fit, 1) / steps
        policy.reset(args.rows)
        # one call in n_action_steps denoises a chunk: time a whole chunk's worth of calls, per call
        n = settings.n_action_steps
        act_s = timed(lambda policy=policy, n=n: [policy.act(obs[:args.rows], cond[:args.rows]) for _ in range(n)],
                      3) / n
        rows.append((f"diffusion {list(dims)}", policy.parameter_count(), fit_s, act_s))
    base_fit, base_act = rows[0][2], rows[0][3]
    print(f"{'policy':24} {'parameters':>11} {'s/step':>8} {'x bc':>6} {'s/act':>8} {'x bc':>6}   "
          f"(batch {args.batch}, {steps} steps, {args.rows} rows acting, {torch.get_num_threads()} threads)")
    for name, params, fit_s, act_s in rows:
        print(f"{name:24} {params:>11,} {fit_s:>8.4f} {fit_s / base_fit:>6.1f} {act_s:>8.4f} {act_s / base_act:>6.1f}")


if __name__ == "__main__":
    main()

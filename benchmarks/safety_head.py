"""The safety head and the shield against the real simulator.

    python benchmarks/safety_head.py RUN_DIR [--episodes 10] [--steps 150] [--refit hidden=128,epochs=60]

``RUN_DIR`` is a run whose world model was trained with ``world_model.safety_head.enabled=true`` (and whose
store has risky episodes, ``collect.n_risky``) and, for the shield, a BC policy (``RUN_DIR/policy``).

1. **The head on fresh real rollouts**: per task, ``--episodes`` new layouts (seeds no store holds) of each
   behaviour (``expert``, ``play``, ``risky``: the collection's own samplers), every frame scored as recorded;
   AUROC, balanced accuracy at the head's threshold (unsure counted as a warning), TPR at 5% FPR and lead
   time (steps of unbroken warning up to each real event), per event and per behaviour. ``--refit`` retrains
   only the head (same dynamics, same split) with other settings first and scores both.
2. **The shield**: BC (deterministic), BC + N(0, 0.5) and the risky sampler, each with and without the shield,
   on the evaluation layouts: success, unsafe episodes and frames per episode, interventions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamgen.data.collect import risky_actor, rollout_expert, rollout_play, rollout_risky  # noqa: E402
from dreamgen.data.store import TrajectoryStore  # noqa: E402
from dreamgen.evaluate import evaluate_task  # noqa: E402
from dreamgen.language import default_encoder  # noqa: E402
from dreamgen.safety import safety_spec  # noqa: E402
from dreamgen.shield import Shield  # noqa: E402
from dreamgen.world_model.checkpoint import load_world_model  # noqa: E402
from dreamgen.world_model.risk import audit, fit_risk  # noqa: E402


def rollouts(robot, tasks, spec, episodes: int, steps: int, table) -> dict[str, list]:
    out: dict[str, list] = {"expert": [], "play": [], "risky": []}
    for ti, task in enumerate(tasks):
        env, expert = robot.make_env(task, max_episode_steps=steps), robot.make_expert(task)
        label = spec.labeller(robot, task)
        text = table.for_task(task)
        for i in range(episodes):
            rng, seed = np.random.default_rng([ti, i, 11]), 900_000 + 1000 * ti + i
            meta = {"task": task, "instruction": text, "episode_id": f"fresh-{task}-{i}"}
            out["expert"].append(rollout_expert(env, expert, rng, seed=seed, noise=0.1, max_steps=steps,
                                                post_success_steps=steps, meta=meta, label=label))
            out["play"].append(rollout_play(env, expert, rng, seed=seed, noise=0.6, random_prob=0.3, steps=steps,
                                            meta=meta, label=label))
            out["risky"].append(rollout_risky(env, rng, seed=seed, steps=steps, meta=meta, label=label))
        env.close()
    return out


def head_table(name: str, model, fresh: dict[str, list]) -> None:
    print(f"\n{name}: thresholds {dict(zip([*model.risk.events, 'any'], np.round(model.risk.thresholds.tolist(), 3), strict=True))}")
    print(f"{'behaviour':9s} {'event':22s} {'frames':>7s} {'pos':>6s} {'AUROC':>6s} {'bal.acc':>7s} {'head only':>9s} "
          f"{'TPR@5%':>6s} {'onsets':>6s} {'lead med':>8s} {'>=5 steps':>9s} {'ECE':>6s} {'unsure':>6s}")
    for behaviour, eps in [*fresh.items(), ("all", [e for v in fresh.values() for e in v])]:
        report = audit(model, eps, by_task=False)
        for event, e in report["events"].items():
            if not e["positives"] and event != "any":
                continue
            print(f"{behaviour:9s} {event:22s} {e['frames']:7d} {e['positives']:6d} {e['auroc']:6.3f} "
                  f"{e['balanced_accuracy']:7.3f} {e['balanced_accuracy_head']:9.3f} {e['tpr_at_5fpr']:6.3f} "
                  f"{e['onsets']:6d} {e['lead_median']:8.1f} {e['warned_5_steps']:9.2f} {e['ece']:6.3f} "
                  f"{report['unsure_share']:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--refit", default="", help="comma-separated RiskConfig fields, e.g. hidden=128,epochs=60")
    parser.add_argument("--no-shield", action="store_true")
    parser.add_argument("--no-head", action="store_true", help="skip part 1 (the head on fresh rollouts)")
    parser.add_argument("--policies", default="bc,bc+N(0,0.5),risky")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.6)
    parser.add_argument("--no-rules", action="store_true", help="the shield without the workspace rule on the "
                                                                "predicted state (evaluate.shield.rules=false)")
    args = parser.parse_args()
    model = load_world_model(args.run_dir / "world_model")
    if model.info["embodiment"] == "fetch":
        from dreamgen.sim.fetch import FETCH as robot
    else:
        from dreamgen.sim.metaworld import METAWORLD as robot
    store = TrajectoryStore.open(args.run_dir / "real.zarr")
    spec = safety_spec(None, robot)
    tasks = sorted(set(model.instructions.tasks))
    start = time.perf_counter()
    fresh = {} if args.no_head else rollouts(robot, tasks, spec, args.episodes, args.steps, model.instructions)
    print(f"{robot.name}, tasks {tasks}: {args.episodes} fresh layouts x 3 behaviours x {args.steps} steps per task "
          f"({time.perf_counter() - start:.0f} s); the head's horizon k = {model.risk.config.horizon}")
    if fresh:
        head_table(f"safety head of {model.info['world_model_id']}", model, fresh)
    if args.refit and fresh:
        fields = dict(kv.split("=") for kv in args.refit.split(","))
        config = dataclasses.replace(model.risk.config, **{k: type(getattr(model.risk.config, k))(v)
                                                           for k, v in fields.items()})
        by_id = {e.meta["episode_id"]: e for e in store.iter_episodes(images=False)}
        split = model.info["episodes"]
        other = load_world_model(args.run_dir / "world_model")
        other.risk, other.heads = None, tuple(h for h in other.heads if not h.startswith("risk"))
        fit_risk(other, [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]], model.risk.events,
                 config, seed=0)
        head_table(f"refit {fields}", other, fresh)
        print("\nrefit on the world model's held-out test episodes:", {
            k: round(v["balanced_accuracy"], 3) for k, v in audit(other, [by_id[i] for i in split["test"]])["events"].items()})
    if args.no_shield:
        return
    from policies import load_policy

    policy = load_policy(args.run_dir / "policy")
    train_seeds = {int(s) for s in store.meta(["seed"])["seed"] if s >= 0}
    encoder = default_encoder()
    print(f"\nshield: {args.episodes} evaluation layouts per task, {args.steps} steps; threshold = the head's "
          f"({float(model.risk.thresholds[-1]):.3f}); {args.candidates} candidates, noise {args.noise}")
    print(f"{'policy':16s} {'shield':6s} {'success':>7s} {'unsafe eps':>10s} {'unsafe frames/ep':>16s} "
          f"{'interventions/ep':>16s} {'unresolved':>10s} {'s':>5s}")
    for name in args.policies.split(","):
        for shielded in (False, True):
            rng = np.random.default_rng(5)
            actors: dict = {}  # the risky sampler: one per evaluated episode, all drawing from rng

            def act(obs, cond, rows, images, name=name, rng=rng, actors=actors):
                if name == "risky":
                    for r in rows:
                        if r not in actors:
                            actors[r] = risky_actor(rng, robot.action_dim)
                    return np.stack([actors[r](o) for r, o in zip(rows, obs, strict=True)])
                a = policy.act(obs, cond, deterministic=True)
                if name != "bc":
                    a = np.clip(a + rng.normal(0, 0.5, a.shape), -1, 1).astype(np.float32)
                return a

            shield = Shield(model, seed=0, candidates=args.candidates, noise=args.noise,
                            rules=None if args.no_rules else spec) if shielded else None
            results, hits, checks, unresolved = [], 0, 0, 0
            t0 = time.perf_counter()
            for ti, task in enumerate(tasks):
                actors.clear()
                r = evaluate_task(shield.wrap(act) if shield else act, task, ti, embodiment=robot,
                                  n_episodes=args.episodes, max_steps=args.steps, run_seed=0, embed=encoder.encode,
                                  instructions="canonical", exclude_seeds=train_seeds,
                                  reset=shield.reset if shield else None, safety=spec)
                results.append(r)
                if shield:
                    s = shield.stats()
                    hits, checks, unresolved = hits + s["interventions"], checks + s["checks"], unresolved + s["unresolved"]
            unsafe = np.concatenate([r.unsafe for r in results])
            n = sum(r.episodes for r in results)
            print(f"{name:16s} {'on' if shielded else 'off':6s} {sum(r.successes for r in results) / n:7.2f} "
                  f"{(unsafe[:, -1] > 0).mean():10.2f} {unsafe[:, -1].mean():16.2f} "
                  f"{hits / n if shielded else 0:16.1f} {unresolved:10d} {time.perf_counter() - t0:5.0f}")


if __name__ == "__main__":
    main()

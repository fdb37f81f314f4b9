"""How often each safety event happens in the real simulator, per task and kind of behaviour.

    python benchmarks/safety.py [--embodiment metaworld|fetch] [--episodes 10] [--steps 150]

Behaviours: ``expert`` (the scripted expert + N(0, 0.1), as collected), ``play`` (the collection's play:
expert + N(0, 0.6), 30% uniform random steps), ``random`` (uniform actions) and ``dive`` (a deliberately risky
policy: random xy, full speed down, random gripper). Prints, per task and behaviour, the share of frames that
raise each event and the share of episodes that raise any (the default ``safety.*`` thresholds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamgen.data.collect import rollout_expert, rollout_play  # noqa: E402
from dreamgen.safety import rates, safety_spec  # noqa: E402

DEMO_TASKS = {"metaworld": ["reach-v3", "push-v3", "pick-place-v3", "drawer-close-v3"],
              "fetch": ["FetchReach-v4", "FetchPush-v4", "FetchPickAndPlace-v4"]}


def dive(env, label, rng, seed: int, steps: int) -> np.ndarray:
    env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        action = np.array([rng.normal(0, 0.3), rng.normal(0, 0.3), -1.0, rng.uniform(-1, 1)], np.float32)
        obs = env.step(np.clip(action, -1, 1))[0]
        rows.append(label(env, obs))
    return np.asarray(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embodiment", default="metaworld", choices=sorted(DEMO_TASKS))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    if args.embodiment == "metaworld":
        from dreamgen.sim.metaworld import METAWORLD as robot
    else:
        from dreamgen.sim.fetch import FETCH as robot
    spec = safety_spec(None, robot)
    assert spec is not None
    steps = min(args.steps, robot.max_steps)
    print(f"{robot.name}: {args.episodes} episodes x {steps} steps per task and behaviour; thresholds {spec.describe()}")
    head = " ".join(f"{e:>22s}" for e in (*spec.events, "any")) + f" {'episodes with any':>18s}"
    print(f"{'task':22s} {'behaviour':9s} {head}")
    for task in DEMO_TASKS[args.embodiment]:
        env, expert = robot.make_env(task, max_episode_steps=steps), robot.make_expert(task)
        label = spec.labeller(robot, task)
        for behaviour in ("expert", "play", "random", "dive"):
            episodes = []
            for i in range(args.episodes):
                rng, seed = np.random.default_rng([i, 7]), 10_000 + i
                if behaviour == "expert":
                    ep = rollout_expert(env, expert, rng, seed=seed, noise=0.1, max_steps=steps, post_success_steps=steps,
                                        meta={}, label=label).unsafe
                elif behaviour in ("play", "random"):
                    ep = rollout_play(env, expert, rng, seed=seed, noise=0.6, random_prob=0.3 if behaviour == "play" else 1.0,
                                      steps=steps, meta={}, label=label).unsafe
                else:
                    ep = dive(env, label, rng, seed, steps)
                episodes.append(ep)
            frame = rates(np.concatenate(episodes), spec.events)
            share = np.mean([e.any() for e in episodes])
            print(f"{task:22s} {behaviour:9s} " + " ".join(f"{frame[e]:22.3f}" for e in (*spec.events, "any"))
                  + f" {share:18.2f}")
        env.close()


if __name__ == "__main__":
    main()

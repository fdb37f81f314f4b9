"""The dream as a judge of policies (EVALUATION.md §6): a set of policies with a real spread of success, each
evaluated on the real simulator and judged in one world model's dream (by its success head, and by the task's
own success rule on the dreamed state), on the same layouts; the ranking statistics of dream against real
(Pearson, Spearman, MMRV, regret@1) and what an episode costs each way (wall time, side by side in one run).

The policies: BC trained on 1, 2, 5, 10 and 20 demos per task (one collection each, nested layouts: the same
run seed); BC on the 5 demos stopped after 1, 3 and 20 epochs; the main job's sweep arms that mixed dreams in
(caps 0.5 and 0.75, training seed 0) and a control arm; MPC with the judging world model (its prior the 5-demo
BC); and uniform random actions. The judge is the world model of the 5-demo run — the main job's pipeline,
run once (``--experiment`` picks the preset: ``demo`` on Meta-World, ``fetch-augment`` on Fetch):

    dreamgen pipeline experiment=demo run_dir=runs/judge/bc5
    python benchmarks/judge.py --root runs/judge

``--skip mpc`` leaves a policy out (by name prefix): MPC plans at every step, in the dream too, and costs most.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dreamgen.judge import ranking, ranking_intervals

DEMOS = (1, 2, 5, 10, 20)
EPOCHS = (1, 3, 20)  # BC on the 5 demos, stopped early
ARMS = ("cap0.5-seed0", "cap0.75-seed0", "control0.75-seed0")  # the pipeline's sweep arms judged too


def cli(*args: str, log: Path) -> float:
    """Run ``dreamgen <args>`` (the real CLI); its wall time in seconds. Output goes to ``log``."""
    start = time.perf_counter()
    with log.open("a") as out:
        code = subprocess.run([sys.executable, "-m", "dreamgen.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).returncode
    if code != 0:
        raise SystemExit(f"dreamgen {' '.join(args[:2])} exited {code}; see {log}")
    return time.perf_counter() - start


def per_episode_cost(root: Path, judge_model: Path, episodes: int, experiment: str) -> dict[str, float]:
    """In one process, side by side: the 5-demo BC policy on the preset's second task (Meta-World's push) for
    ``episodes`` real episodes and judged in the dream from the same layouts (episodes x members dreams); seconds
    per episode each, no start-up."""
    from hydra import compose, initialize_config_dir

    from dreamgen.dream.core import StartPool
    from dreamgen.evaluate import evaluate_task, evaluation_seeds
    from dreamgen.judge import judge_task
    from dreamgen.language import default_encoder
    from dreamgen.world_model.checkpoint import load_world_model
    from jobs.common import embodiment
    from jobs.evaluate import acting
    from jobs.train_world_model import dream_config
    from policies import load_policy

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    task = list(cfg.tasks)[1]
    robot, model, policy = embodiment(cfg), load_world_model(judge_model), load_policy(root / "bc5" / "policy")
    index, encoder, act = list(cfg.tasks).index(task), default_encoder(), acting(policy)
    start = time.perf_counter()
    evaluate_task(act, task, index, embodiment=robot, n_episodes=episodes, max_steps=robot.max_steps, run_seed=0,
                  embed=encoder.encode, instructions="canonical")
    real = (time.perf_counter() - start) / episodes
    start = time.perf_counter()
    starts = StartPool.from_simulator(robot, task, evaluation_seeds(0, index, episodes))
    result = judge_task(act, task, starts, [model.instructions.for_task(task)] * episodes, model=model,
                        max_steps=robot.max_steps, config=dream_config(cfg), judge_head="success", seed=0,
                        rule=robot.success_rule(task))
    dream = (time.perf_counter() - start) / result.success.size
    print(f"\nper episode on {task}, in one process: real {real * 1000:.0f} ms, dream {dream * 1000:.1f} ms "
          f"({result.success.size} dreams = {episodes} starts x {model.members} members): {real / dream:.0f}x cheaper "
          f"per dream, {real * episodes / (dream * result.success.size):.1f}x per judged policy")
    return {"task": task, "real_s": real, "dream_s": dream, "ratio": real / dream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="holds bc5/ (real.zarr + world_model)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    parser.add_argument("--experiment", default="demo", help="the preset of every run (demo | fetch-augment)")
    parser.add_argument("--skip", nargs="*", default=[], help="leave out policies whose name starts so")
    args = parser.parse_args()
    root, log = args.root.resolve(), args.root.resolve() / "judge.log"
    base = [f"experiment={args.experiment}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}", "progress=false"]
    judge_model = root / "bc5" / "world_model"
    policies: dict[str, tuple[list[str], Path]] = {}  # name -> (how evaluate gets it, the store it met)
    bc5 = root / "bc5"
    for k in DEMOS:
        run = root / f"bc{k}"
        if not (run / "real.zarr").is_dir():
            cli("collect", *base, f"run_dir={run}", f"collect.n_expert={k}", log=log)
        if not (run / "policy").is_dir():
            cli("train-policy", *base, f"run_dir={run}", f"collect.n_expert={k}", log=log)
        policies[f"bc {k} demos"] = ([f"evaluate.policy={run / 'policy'}"], run / "real.zarr")
    for epochs in EPOCHS:
        run = root / f"bc5-e{epochs}"
        if not (run / "policy").is_dir():
            cli("train-policy", *base, f"run_dir={run}", f"policy.store={bc5 / 'real.zarr'}",
                f"policy.epochs={epochs}", log=log)
        policies[f"bc 5 demos, {epochs} epochs"] = ([f"evaluate.policy={run / 'policy'}"], bc5 / "real.zarr")
    for arm in ARMS:
        if (bc5 / "sweep" / arm / "policy").is_dir():  # the pipeline's own arms (absent where it never swept)
            policies[f"sweep {arm}"] = ([f"evaluate.policy={bc5 / 'sweep' / arm / 'policy'}"], bc5 / "real.zarr")
    policies["mpc"] = (["policy.family=mpc", f"policy.mpc.world_model={judge_model}",
                        f"policy.mpc.prior={bc5 / 'policy'}"], bc5 / "real.zarr")
    policies["random"] = (["policy.family=random"], bc5 / "real.zarr")
    policies = {name: how for name, how in policies.items() if not any(name.startswith(x) for x in args.skip)}

    ways = {"real": [], "dream (head)": ["evaluate.where=dream"],
            "dream (rule)": ["evaluate.where=dream", "evaluate.judge=rule"]}
    results: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float] = {way: 0.0 for way in ways}
    for name, (policy, store) in policies.items():
        results[name] = {}
        for way, extra in ways.items():
            out = root / "eval" / name.replace(" ", "_").replace(",", "") / way.split()[-1].strip("()")
            if not (out / "eval.json").is_file():
                seconds[way] += cli("evaluate", *base, f"run_dir={out}", *policy, f"evaluate.store={store}",
                                    f"evaluate.world_model={judge_model}", f"evaluate.n_episodes={args.episodes}",
                                    *extra, log=log)
            results[name][way] = json.loads((out / "eval.json").read_text())

    tasks = [row["task"] for row in next(iter(results.values()))["real"]["tasks"]]
    print(f"{'policy':28s} " + " ".join(f"{way:>22s}" for way in ways))
    for name, by_way in results.items():
        cells = []
        for way in ways:
            o = by_way[way]["overall"]
            unjudged = f" u{o['unjudged']:.2f}" if "unjudged" in o else ""
            cells.append(f"{o['success_rate']:.2f} [{o['ci95_low']:.2f},{o['ci95_high']:.2f}]{unjudged}".rjust(22))
        print(f"{name:28s} " + " ".join(cells))
    real = [by_way["real"]["overall"]["success_rate"] for by_way in results.values()]
    report = {"policies": list(results), "tasks": tasks, "results": results, "ranking": {}, "seconds": seconds}
    print(f"\n{'judge':14s} {'pearson':>8s} {'spearman':>9s} {'mmrv':>6s} {'regret@1':>9s}   (over {len(real)} policies)")
    for way in list(ways)[1:]:
        dream = [by_way[way]["overall"]["success_rate"] for by_way in results.values()]
        stats = ranking(dream, real)
        bounds = ranking_intervals(dream, real)
        report["ranking"][way] = {"overall": stats, "intervals": bounds, "per_task": {
            task: ranking([by_way[way]["tasks"][i]["success_rate"] for by_way in results.values()],
                          [by_way["real"]["tasks"][i]["success_rate"] for by_way in results.values()])
            for i, task in enumerate(tasks)}}
        print(f"{way:14s} {stats['pearson']:8.3f} {stats['spearman']:9.3f} {stats['mmrv']:6.3f} "
              f"{stats['regret_at_1']:9.3f}")
        print(f"{'  95% (policies resampled)':14s} " + "  ".join(
            f"[{bounds[k][0]:.2f}, {bounds[k][1]:.2f}]" for k in ("pearson", "spearman", "mmrv", "regret_at_1")))
    if all(seconds.values()):
        print("\nwall time per evaluation (CLI start-up included), side by side: " + ", ".join(
            f"{way} {s / len(policies):.0f} s" for way, s in seconds.items())
            + f"; real / dream (rule) = {seconds['real'] / seconds['dream (rule)']:.1f}x")
    report["per_episode"] = per_episode_cost(root, judge_model, args.episodes, args.experiment)
    (root / "judge.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"\n-> {root / 'judge.json'}")


if __name__ == "__main__":
    main()

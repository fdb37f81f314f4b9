"""``dreamgen evaluate``: a policy on the real simulator, per-task success with Wilson 95% CIs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from jobs.common import check_policy, embodiment, hydra_main, log, progress, run_verb


def check_config(cfg: DictConfig) -> list[str]:
    """The evaluated tasks; refuses bad ``evaluate.*`` values."""
    from dreamgen.errors import ConfigError

    e = cfg.evaluate
    robot = embodiment(cfg)
    tasks = robot.check_tasks(cfg.tasks)
    robot.require_simulator("evaluate", "measure a policy on the robot itself; dreamgen export gives the mix to "
                                        "train it on")
    if e.n_episodes < 1 or not 1 <= e.max_steps <= robot.max_steps:
        raise ConfigError(f"evaluate.n_episodes={e.n_episodes} must be >= 1 and evaluate.max_steps="
                          f"{e.max_steps} in [1, {robot.max_steps}] ({robot.name}'s episode limit)")
    if e.instructions not in ("canonical", "sampled"):
        raise ConfigError(f"evaluate.instructions={e.instructions!r}; accepted: canonical, sampled")
    return tasks


def mpc_policy(cfg: DictConfig) -> Any:
    """``policy.family=mpc``: MPC with the world model (and its prior policy) on the real simulator.

    Refuses, before any episode runs, a missing world model or prior, and a task the model never saw.
    """
    from dreamgen.errors import ConfigError
    from dreamgen.world_model.checkpoint import load_world_model
    from jobs.generate import planner_config
    from policies import load_policy
    from policies.samplers import make_mpc

    m = cfg.policy.mpc
    config = planner_config(cfg)
    model = load_world_model(m.world_model)
    embodiment(cfg).check_recorded(model.info.get("embodiment"), f"world model {m.world_model}")
    if model.cameras is not None:
        raise ConfigError(f"policy.family=mpc plans from the robot's state; {m.world_model} is a latent (camera) world "
                          "model, which plans only inside its own dreams (generate.sampler.kind=planner); give a "
                          "state world model (world_model.kind=ensemble)")
    unseen = [task for task in cfg.tasks if task not in set(model.instructions.tasks)]
    if unseen:
        raise ConfigError(f"policy.family=mpc: the world model {m.world_model} was never trained on task "
                          f"{unseen[0]!r}; it knows {sorted(set(model.instructions.tasks))} (set tasks= to those, or "
                          "train a world model on a store holding the task)")
    prior = None
    if config.prior_samples:
        if not m.prior:
            raise ConfigError(f"planner.prior_samples={config.prior_samples} needs policy.mpc.prior (a policy "
                              "checkpoint), or set planner.prior_samples=0")
        check_policy(cfg, m.prior, "policy.mpc.prior")
        prior = load_policy(m.prior)
    policy = make_mpc(model, config, prior, seed=int(cfg.seed))
    policy.info.update(family="mpc", world_model=str(m.world_model), world_model_id=model.info["world_model_id"],
                       prior=str(m.prior) if prior is not None else None, planner=config.label())
    return policy


def load_evaluated(cfg: DictConfig) -> Any:
    """The policy ``evaluate`` runs: the checkpoint at ``evaluate.policy``, or the MPC planner (family=mpc)."""
    from policies import load_policy
    from policies.families import get

    if get(cfg.policy.family).plans:
        return mpc_policy(cfg)
    check_policy(cfg, cfg.evaluate.policy, "evaluate.policy")
    return load_policy(cfg.evaluate.policy)


def evaluate_policy(cfg: DictConfig, policy: Any, on_task: Callable[[Any], None] | None = None) -> dict:
    """Success of ``policy`` per task on the real simulator (no tracking, no files): ``summarise``'s dict.

    Layout seeds derive from ``cfg.seed`` alone, so every policy evaluated under one run seed meets the
    same layouts (a paired comparison); seeds of ``evaluate.store``'s episodes are refused.
    """
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.evaluate import evaluate_task, summarise
    from dreamgen.language import default_encoder

    e = cfg.evaluate
    tasks = check_config(cfg)
    store = TrajectoryStore.open(e.store)
    train_seeds = {int(s) for s in store.meta(["seed"])["seed"] if s >= 0}
    encoder, robot = default_encoder(), embodiment(cfg)
    results = []
    for index, task in enumerate(tasks):
        stateful = hasattr(policy, "reset")  # keeps per-episode state (MPC: previous actions, warm plans)
        cameras = getattr(policy, "cameras", None)  # an image policy sees the simulator through its cameras

        def act(obs, cond, rows, images, cameras=cameras, stateful=stateful):
            if cameras is not None:
                return policy.act(obs, cond, images=images, deterministic=True)
            if stateful:
                return policy.act(obs, cond, deterministic=True, rows=rows)
            return policy.act(obs, cond, deterministic=True)

        result = evaluate_task(act, task, index, embodiment=robot, n_episodes=e.n_episodes, max_steps=e.max_steps,
                               run_seed=cfg.seed, embed=encoder.encode, instructions=e.instructions,
                               exclude_seeds=train_seeds, reset=policy.reset if stateful else None, cameras=cameras)
        results.append(result)
        if on_task is not None:
            on_task(result)
    return summarise(results)


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.evaluate import format_table
    from dreamgen.rundir import write_json
    from policies import families

    e = cfg.evaluate
    tasks = check_config(cfg)
    policy = load_evaluated(cfg)
    with run_verb(cfg, "evaluate", inputs={"real": TrajectoryStore.open(e.store)}) as (run_dir, tracker):
        bar = progress(None, cfg, total=len(tasks), desc="evaluate", unit="task")

        def on_task(result: Any) -> None:
            bar.update(1)
            tracker.log_metrics({f"policy/success_rate/{result.task}": result.rate})

        summary = evaluate_policy(cfg, policy, on_task)
        bar.close()
        summary["policy"] = policy.info if families.get(cfg.policy.family).plans else str(e.policy)
        write_json(run_dir / "eval.json", summary)
        tracker.log_dict(summary, "eval.json")
        overall = summary["overall"]
        tracker.log_metrics({"policy/success_rate": overall["success_rate"],
                             "policy/success_ci95_low": overall["ci95_low"],
                             "policy/success_ci95_high": overall["ci95_high"]})
        log.info("real-simulator success (%d episodes per task, seeds disjoint from training):\n%s",
                 e.n_episodes, format_table(summary))
        return summary


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen evaluate``: a policy on the real simulator, per-task success with Wilson 95% CIs."""

from __future__ import annotations

from omegaconf import DictConfig

from jobs.common import hydra_main, log, progress, run_verb


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError
    from dreamgen.evaluate import evaluate_task, format_table, summarise
    from dreamgen.language import default_encoder
    from dreamgen.rundir import write_json
    from dreamgen.sim.metaworld import check_tasks
    from policies import load_policy

    e = cfg.evaluate
    tasks = check_tasks(cfg.tasks)
    if e.n_episodes < 1 or not 1 <= e.max_steps <= 500:
        raise ConfigError(f"evaluate.n_episodes={e.n_episodes} must be >= 1 and evaluate.max_steps="
                          f"{e.max_steps} in [1, 500]")
    if e.instructions not in ("canonical", "sampled"):
        raise ConfigError(f"evaluate.instructions={e.instructions!r}; accepted: canonical, sampled")
    policy = load_policy(e.policy)
    store = TrajectoryStore.open(e.store)
    train_seeds = {int(s) for s in store.meta(["seed"])["seed"] if s >= 0}
    encoder = default_encoder()
    with run_verb(cfg, "evaluate", inputs={"real": store}) as (run_dir, tracker):
        results = []
        for index, task in enumerate(progress(tasks, cfg, desc="evaluate", unit="task")):
            result = evaluate_task(
                lambda obs, cond: policy.act(obs, cond, deterministic=True), task, index,
                n_episodes=e.n_episodes, max_steps=e.max_steps, run_seed=cfg.seed,
                embed=encoder.encode, instructions=e.instructions, exclude_seeds=train_seeds)
            results.append(result)
            tracker.log_metrics({f"policy/success_rate/{task}": result.rate})
        summary = summarise(results)
        summary["policy"] = str(e.policy)
        write_json(run_dir / "eval.json", summary)
        tracker.log_dict(summary, "eval.json")
        overall = summary["overall"]
        tracker.log_metrics({"policy/success_rate": overall["success_rate"],
                             "policy/success_ci95_low": overall["ci95_low"],
                             "policy/success_ci95_high": overall["ci95_high"]})
        table = format_table(summary)
        log.info("real-simulator success (%d episodes per task, seeds disjoint from training):\n%s",
                 e.n_episodes, table)
        return summary


main = hydra_main(run)

if __name__ == "__main__":
    main()

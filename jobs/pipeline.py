"""``dreamgen pipeline``: the main job, collect → train-policy → evaluate, printing per-task success.

Each stage is the same function its own verb runs, under one parent MLflow run.
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs import collect, evaluate, train_policy
from jobs.common import hydra_main, run_verb


def run(cfg: DictConfig) -> dict:
    from dreamgen.evaluate import format_table

    collect.collect_spec(cfg)  # fail fast on the first stage's config
    with run_verb(cfg, "pipeline") as (run_dir, tracker):
        collected = collect.run(cfg)
        trained = train_policy.run(cfg)
        summary = evaluate.run(cfg)
        report = {"collect": collected, "train_policy": trained, "evaluate": summary}
        from dreamgen.rundir import write_json

        write_json(run_dir / "report.json", report)
        tracker.log_dict(report, "report.json")
        tracker.log_metrics({"policy/success_rate": summary["overall"]["success_rate"]})
    print(f"\ndreamgen pipeline: {cfg.name} (run_dir {cfg.run_dir})\n"
          f"real-only BC policy, {cfg.evaluate.n_episodes} real-simulator episodes per task, "
          f"Wilson 95% CI:\n{format_table(summary)}\nreport: {run_dir / 'report.json'}")
    return report


main = hydra_main(run)

if __name__ == "__main__":
    main()

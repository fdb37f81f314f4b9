"""``dreamgen pipeline``: the main job, collect → train-world-model → train-policy → generate → audit
(replay) → train-quality → filter → audit (report) → evaluate.

Prints the world model's fidelity summary, the generation totals and the policy's per-task success on
the real simulator.

Each stage is the same function its own verb runs, under one parent MLflow run.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from jobs import audit, collect, evaluate, generate, train_policy, train_quality, train_world_model
from jobs import filter as filter_verb
from jobs.common import hydra_main, run_verb


def run(cfg: DictConfig) -> dict:
    from dreamgen.evaluate import format_table

    collect.collect_spec(cfg)  # fail fast on every stage's config
    train_world_model.ensemble_config(cfg)
    train_world_model.dream_config(cfg)
    generate.check_config(cfg)
    train_quality.quality_config(cfg)
    filter_verb.filter_config(cfg)
    with run_verb(cfg, "pipeline") as (run_dir, tracker):
        collected = collect.run(cfg)
        world_model = train_world_model.run(cfg)
        trained = train_policy.run(cfg)
        dreams = generate.run(cfg)
        audit.run(cfg, report=False)  # real outcomes of the audited dreams: training data for the quality model
        quality = train_quality.run(cfg)
        filtered = filter_verb.run(cfg)
        audited = audit.run(cfg)
        summary = evaluate.run(cfg)
        report = {"collect": collected, "world_model": world_model, "train_policy": trained, "generate": dreams,
                  "train_quality": quality, "filter": filtered, "audit": audited, "evaluate": summary}
        from dreamgen.rundir import write_json

        write_json(run_dir / "report.json", report)
        tracker.log_dict(report, "report.json")
        tracker.log_metrics({"policy/success_rate": summary["overall"]["success_rate"]})
    wm_report = json.loads((run_dir / "world_model" / "report.json").read_text())
    print(f"\ndreamgen pipeline: {cfg.name} (run_dir {cfg.run_dir})\n"
          f"world model {world_model['world_model_id']} on held-out real episodes:\n"
          f"{train_world_model.format_report(wm_report)}\n\n"
          f"dreams: {int(dreams['generate/store_episodes'])} in {dreams['store']} (job {dreams['job_id']}), "
          f"{dreams['generate/episodes_per_s']:.1f} episodes/s; ended with predicted success "
          f"{int(dreams['generate/success'])}, halted {int(dreams['generate/halted'])}, "
          f"non-finite {int(dreams['generate/nonfinite'])}\n"
          f"filter: accepted {int(filtered['filter/accepted'])} (quality threshold "
          f"{filtered['filter/quality_threshold']:.3f}); audit on {audited['test_dreams']} held-out dreams "
          f"replayed in the real simulator, Wilson 95% CI:\n{audit.format_audit(audited)}\n\n"
          f"real-only BC policy, {cfg.evaluate.n_episodes} real-simulator episodes per task, "
          f"Wilson 95% CI:\n{format_table(summary)}\nreport: {run_dir / 'report.json'}")
    return report


main = hydra_main(run)

if __name__ == "__main__":
    main()

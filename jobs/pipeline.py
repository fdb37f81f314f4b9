"""``dreamgen pipeline``: the main job, collect → train-world-model → [train-policy] → generate → audit
(replay) → train-quality → filter → audit (report) → sweep.

Does dream data help, and at what ratio? The last stage answers it: the capped-mix sweep trains and
evaluates a policy per (cap, seed) on the real simulator. ``train-policy`` runs only when the dreams
come from the BC policy or plan with it as a prior (``generate.sampler.kind=policy|planner|recovery``); the sweep's cap-0 arms are the real-only
baseline. Prints a final summary (success per cap with intervals, the filter's precision, dream
throughput) and writes ``run_dir/report.json``.

Each stage is the same function its own verb runs, as a child of one parent MLflow run.
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from jobs import audit, collect, generate, sweep, train_policy, train_quality, train_world_model
from jobs import filter as filter_verb
from jobs.common import hydra_main, run_verb


def summary_text(cfg: DictConfig, report: dict[str, Any]) -> str:
    """The final summary: world model, dreams and their throughput, the filter's precision, the sweep."""
    from dreamgen.sweep import format_sweep

    wm, dreams, filtered, audited, swept = (report[k] for k in ("world_model", "generate", "filter", "audit", "sweep"))
    learned = audited["filters"].get("learned-filter", {}).get("overall")
    everything = audited["filters"]["accept-all"]["overall"]
    precision = ("n/a (no dream accepted in the held-out fold)" if learned is None or not learned["accepted"] else
                 f"{learned['precision']['value']:.2f} [{learned['precision']['ci95'][0]:.2f}, "
                 f"{learned['precision']['ci95'][1]:.2f}] ({learned['precision']['hits']}/{learned['precision']['of']}),"
                 f" recall {learned['recall']['value']:.2f}")
    lines = [
        f"dreamgen pipeline: {cfg.name} (run_dir {cfg.run_dir}), {report['seconds'] / 60:.1f} min",
        f"world model {wm['world_model_id']}",
        f"dreams: {int(dreams['generate/store_episodes'])} from sampler {cfg.generate.sampler.kind}"
        f"{' (an oracle labeller: the scripted expert acting in the dream)' if cfg.generate.sampler.kind == 'expert' else ''}; "
        f"{dreams['generate/episodes_per_s']:.1f} episodes/s, {dreams['generate/transitions_per_s']:.0f} transitions/s",
        f"filter: accepted {int(filtered['filter/accepted'])} of {int(dreams['generate/store_episodes'])} "
        f"(quality threshold {filtered['filter/quality_threshold']:.3f}"
        f"{'' if filtered['choice'].get('met', True) else '; it did NOT reach filter.target_precision on the fit fold'})",
        f"filter precision on {audited['test_dreams']} held-out dreams replayed in the real simulator: {precision} "
        f"(accept-all {everything['precision']['value']:.2f})",
        "",
        f"real-simulator success per cap ({swept['episodes_per_task']} episodes per task per arm, seeds "
        f"{swept['seeds']}, pooled; Wilson / Newcombe 95% CI):",
        format_sweep(swept),
    ]
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict:
    started = time.monotonic()
    collect.collect_spec(cfg)  # fail fast on every stage's config
    train_world_model.ensemble_config(cfg)
    train_world_model.dream_config(cfg)
    generate.check_config(cfg)
    train_quality.quality_config(cfg)
    filter_verb.filter_config(cfg)
    sweep.check_config(cfg)
    with run_verb(cfg, "pipeline") as (run_dir, tracker):
        report: dict[str, Any] = {"collect": collect.run(cfg), "world_model": train_world_model.run(cfg)}
        if cfg.generate.sampler.kind in ("policy", "planner", "recovery"):  # the sampler (or its prior) is the real-only BC policy
            report["train_policy"] = train_policy.run(cfg)
        report["generate"] = generate.run(cfg)
        audit.run(cfg, report=False)  # real outcomes of the audited dreams: training data for the quality model
        report["train_quality"] = train_quality.run(cfg)
        report["filter"] = filter_verb.run(cfg)
        report["audit"] = audit.run(cfg)
        report["sweep"] = sweep.run(cfg)
        report["seconds"] = time.monotonic() - started
        from dreamgen.rundir import write_json

        write_json(run_dir / "report.json", report)
        tracker.log_dict(report, "report.json")
        swept = report["sweep"]
        tracker.log_metrics({"pipeline/minutes": report["seconds"] / 60,
                             "sweep/recommended_cap": swept["recommended_cap"],
                             **{f"sweep/success/cap_{k}": v["success_rate"] for k, v in swept["per_cap"].items()}})
        text = summary_text(cfg, report)
        tracker.log_text(text, "summary.txt")
    print(f"\n{text}\nreport: {run_dir / 'report.json'}\nMLflow: mlflow ui --backend-store-uri {cfg.tracking.uri}")
    return report


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen pipeline``: the main job, collect → train-world-model → [train-policy] → generate → audit
(replay) → train-quality → filter → audit (report) → sweep.

Does dream data help, and at what ratio? The last stage answers it: the capped-mix sweep trains and
evaluates a policy per (cap, seed) on the real simulator. ``train-policy`` runs only when the dreams
come from the BC policy or plan with it as a prior (``generate.sampler.kind=policy|planner|recovery|retarget``); the sweep's cap-0 arms are the real-only
baseline. Prints a final summary (success per cap with intervals, the filter's precision, dream
throughput) and writes ``run_dir/report.json``.

Each stage is the same function its own verb runs, as a child of one parent MLflow run.

Finished work survives. Every stage commits its output atomically (staged directories, whole-episode
store commits), and the pipeline records each finished stage and its report in
``run_dir/pipeline/stages.json``. A failure or interrupt (SIGINT, SIGTERM, SIGKILL) loses at most the
running stage's uncommitted output; rerunning the same command skips the finished stages and resumes
the interrupted one (generation and the sweep resume inside the stage: committed chunks and finished
arms are kept), ending with the same report as an uninterrupted run. A rerun with other settings is
refused, naming them. Everything that can be checked is checked before the first stage: every
stage's settings, the instructions, the tracking URI.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jobs import audit, collect, generate, sweep, train_policy, train_quality, train_world_model
from jobs import filter as filter_verb
from jobs.common import hydra_main, log, run_verb


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


def stages(cfg: DictConfig) -> list[tuple[str, Callable[[DictConfig], Any]]]:
    """The pipeline's stages in order: (report key, the verb's run function)."""
    out: list[tuple[str, Callable[[DictConfig], Any]]] = [("collect", collect.run),
                                                          ("world_model", train_world_model.run)]
    from policies.samplers import PLANNING

    if cfg.generate.sampler.kind in ("policy", *PLANNING):  # the sampler (or its prior) is the real-only BC policy
        out.append(("train_policy", train_policy.run))
    out += [("generate", generate.run),
            ("audit_replay", lambda c: audit.run(c, report=False)),  # real outcomes: the quality model's training data
            ("train_quality", train_quality.run), ("filter", filter_verb.run), ("audit", audit.run),
            ("sweep", sweep.run)]
    return out


class StageLedger:
    """``run_dir/pipeline/stages.json``: the settings of this pipeline and each finished stage's report.

    Written atomically after every stage, so it never names a stage whose output is not committed.
    """

    def __init__(self, run_dir: Path, settings: dict[str, Any]):
        from dreamgen.errors import RunDirError
        from dreamgen.rundir import differences

        self.path = run_dir / "pipeline" / "stages.json"
        self.record: dict[str, Any] = {"settings": settings, "done": {}}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
                old_settings, done = old["settings"], dict(old["done"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise RunDirError(f"{self.path} is corrupt ({exc}); delete it to run every stage again") from exc
            changed = differences(old_settings, settings)
            if changed and done:
                raise RunDirError(f"run_dir {run_dir} holds a pipeline run with other settings ({'; '.join(changed[:4])}"
                                  f"{'; ...' if len(changed) > 4 else ''}); repeat its overrides to resume it, or "
                                  "use a new run_dir")
            self.record["done"] = done

    def run(self, name: str, stage: Callable[[], Any]) -> Any:
        from dreamgen.rundir import write_json

        if name in self.record["done"]:
            log.info("pipeline: stage %s finished in an earlier run of this command; kept", name)
            return self.record["done"][name]["report"]
        started = time.monotonic()
        report = stage()
        self.record["done"][name] = {"report": report, "seconds": time.monotonic() - started}
        write_json(self.path, self.record)
        return report

    @property
    def seconds(self) -> float:
        return sum(float(entry["seconds"]) for entry in self.record["done"].values())


def run(cfg: DictConfig) -> dict:
    from dreamgen.rundir import write_json

    collect.collect_spec(cfg)  # fail fast on every stage's config and on the instructions
    train_world_model.ensemble_config(cfg)
    train_world_model.dream_config(cfg)
    generate.check_config(cfg)
    generate.check_instructions(cfg, tuple(cfg.tasks))
    train_quality.quality_config(cfg)
    filter_verb.filter_config(cfg)
    sweep.check_config(cfg)
    with run_verb(cfg, "pipeline") as (run_dir, tracker):
        from dreamgen.tracking import flatten

        unresolved = OmegaConf.to_container(cfg, resolve=False)  # paths stay ${run_dir}/...: the run may move
        assert isinstance(unresolved, dict)
        settings = {k: v for k, v in flatten(unresolved).items()  # what can change results, not where or how fast
                    if k.split(".")[0] not in ("run_dir", "tracking", "progress", "hydra")
                    and k.split(".")[-1] not in ("workers", "address")}
        ledger = StageLedger(run_dir, settings)
        report: dict[str, Any] = {}
        for name, stage in stages(cfg):
            result = ledger.run(name, functools.partial(stage, cfg))
            if name != "audit_replay":
                report[name] = result
        report["seconds"] = ledger.seconds  # the stages' own time, summed over resumed runs

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

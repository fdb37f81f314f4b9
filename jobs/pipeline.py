"""``dreamgen pipeline``: the main job, collect → train-world-model → [train-policy] → generate → audit
(replay) → train-quality → filter → audit (report) → [rounds] → sweep. A robot without a simulator runs it
without the audits, at a given filter threshold, with the sweep judged in the dream (``sweep.judge=dream``).

Does dream data help, and at what ratio? The last stage answers it: the capped-mix sweep trains and
evaluates a policy per (cap, seed) on the real simulator. ``train-policy`` runs only when the dreams
come from the BC policy or plan with it as a prior (``generate.sampler.kind=policy|planner|recovery|
retarget``); the sweep's cap-0 arms are the real-only baseline.

Rounds (``pipeline.rounds = R > 1``; those samplers only): round ``r`` retrains the BC policy on the real
demos + round ``r-1``'s accepted dreams (``pipeline.round_cap``), dreams again with it as the sampler or
the planner's prior, audits, trains the quality model and filters, under ``run_dir/round<r>``; the sweep
measures round ``R``'s dreams (``run_dir/round<R>/sweep``). Raising ``pipeline.rounds`` on a finished
run keeps every finished stage and adds the rounds and their sweep.

Prints a final summary (success per cap with intervals, each round's filter precision and dream
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
from jobs.common import embodiment, hydra_main, log, run_verb, stop_if_signalled


def _precision(audited: dict[str, Any]) -> str:
    learned = audited["filters"].get("learned-filter", {}).get("overall")
    if learned is None or not learned["accepted"]:
        return "n/a (no dream accepted in the held-out fold)"
    p = learned["precision"]
    return (f"{p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] ({p['hits']}/{p['of']}), "
            f"recall {learned['recall']['value']:.2f}")


def round_text(cfg: DictConfig, report: dict[str, Any], suffix: str = "") -> list[str]:
    """Dreams, filter and audit of one round: ``suffix`` "" (round 1) or "@<r>"."""
    dreams, filtered, audited = (report.get(k + suffix) for k in ("generate", "filter", "audit"))
    from policies.samplers import sampler_kind

    kind = sampler_kind(cfg.generate.sampler.kind)
    oracle = f" (an oracle labeller: {kind.summary})" if kind.oracle else ""
    lines = [
        f"dreams: {int(dreams['generate/store_episodes'])} from sampler {cfg.generate.sampler.kind}{oracle}; "
        f"{dreams['generate/episodes_per_s']:.1f} episodes/s, {dreams['generate/transitions_per_s']:.0f} transitions/s",
        f"filter: accepted {int(filtered['filter/accepted'])} of {int(dreams['generate/store_episodes'])} "
        f"(quality threshold {filtered['filter/quality_threshold']:.3f}"
        f"{'' if filtered['choice'].get('met', True) else '; it did NOT reach filter.target_precision on the fit fold'})"]
    if audited is None:
        return [*lines, f"no audit: embodiment {embodiment(cfg).name} has no simulator to replay dreams in, so the "
                        "filter's precision is not measured"]
    everything = audited["filters"]["accept-all"]["overall"]["precision"]
    return [
        *lines,
        f"filter precision on {audited['test_dreams']} held-out dreams replayed in the real simulator: "
        f"{_precision(audited)} (accept-all {everything['value']:.2f}: {everything['hits']}/{everything['of']} "
        "really succeed)",
    ]


def summary_text(cfg: DictConfig, report: dict[str, Any]) -> str:
    """The final summary: world model, each round's dreams, their filter and audit, the sweep."""
    from dreamgen.sweep import format_sweep

    swept = report["sweep"]
    lines = [f"dreamgen pipeline: {cfg.name} (run_dir {cfg.run_dir}), {report['seconds'] / 60:.1f} min",
             f"world model {report['world_model']['world_model_id']}"]
    rounds = int(cfg.pipeline.rounds)
    for r in range(1, rounds + 1):
        suffix = "" if r == 1 else f"@{r}"
        if rounds > 1:
            head = "the real-only BC policy" if r == 1 else (
                f"BC retrained on round {r - 1}'s {report['train_policy' + suffix]['policy/dream_episodes']} accepted "
                f"dreams at cap {cfg.pipeline.round_cap:g}")
            lines.append(f"round {r} ({head}):")
        lines += [("  " if rounds > 1 else "") + line for line in round_text(cfg, report, suffix)]
    if swept.get("nothing_to_mix"):
        lines += ["", "the filter accepted no dream: nothing to mix, so only the real-only arms ran (loosen filter.*, "
                  "e.g. filter.quality_threshold=<probability>, in a new run_dir to measure dreams)"]
    where = "success JUDGED IN THE WORLD MODEL'S DREAM (no real episode ran)" if swept.get("judged_in") == "dream" \
        else "real-simulator success"
    lines += ["", f"{where} per cap{f' (round {rounds} dreams)' if rounds > 1 else ''} "
              f"({swept['episodes_per_task']} episodes per task per arm, seeds {swept['seeds']}, pooled; "
              "Wilson / Newcombe 95% CI):", format_sweep(swept)]
    return "\n".join(lines)


ROUND_FREE = "pipeline.rounds="  # more (or fewer) rounds keep the finished ones: each round's stages are its own
ROUND_STAGES = ("train_policy", "generate", "audit_replay", "train_quality", "filter", "audit")


def check_rounds(cfg: DictConfig) -> int:
    """``pipeline.rounds`` and ``pipeline.round_cap``, refused when they cannot mean anything."""
    from dreamgen.errors import ConfigError
    from dreamgen.mix import check_fraction
    from policies.samplers import SAMPLERS, sampler_kind

    rounds = cfg.pipeline.rounds
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"pipeline.rounds={rounds!r}; must be an integer >= 1 (1 = dream once)")
    if check_fraction(cfg.pipeline.round_cap, "pipeline.round_cap") <= 0 and rounds > 1:
        raise ConfigError(f"pipeline.round_cap={cfg.pipeline.round_cap}; must be in (0, 1) when pipeline.rounds > 1 "
                          "(round r's policy learns from round r-1's dreams at that share)")
    kind = sampler_kind(cfg.generate.sampler.kind)
    if rounds > 1 and not kind.uses_trained_policy:
        accepted = ", ".join(k.name for k in SAMPLERS if k.uses_trained_policy)
        raise ConfigError(f"pipeline.rounds={rounds} with generate.sampler.kind={kind.name}: a later round dreams with "
                          "the BC policy retrained on the mix, which this sampler does not use; accepted kinds: "
                          f"{accepted} (or pipeline.rounds=1)")
    return rounds


def round_config(cfg: DictConfig, r: int) -> DictConfig:
    """The config of dream round ``r`` (round 1 is ``cfg`` itself). Round ``r > 1`` lives in
    ``run_dir/round<r>``: its BC policy trains on the real demos + round ``r-1``'s accepted dreams at
    ``pipeline.round_cap``; its dreams (run seed + 1000·(r-1): new starts and noise), audit, quality model
    and filter are its own. The real store and the world model are round 1's."""
    if r == 1:
        return cfg
    resolved = OmegaConf.to_container(cfg, resolve=True)  # base paths fixed before run_dir moves
    out = OmegaConf.create(resolved)
    here = Path(cfg.run_dir) / f"round{r}"
    before = Path(round_config(cfg, r - 1).generate.store)
    dreams, audit_dir, quality = str(here / "dream.zarr"), str(here / "audit"), str(here / "quality")
    out.merge_with({
        "run_dir": str(here), "name": f"{cfg.name}/round{r}", "seed": int(cfg.seed) + 1000 * (r - 1),
        "policy": {"dream_store": str(before), "max_dream_fraction": float(cfg.pipeline.round_cap), "control": False},
        "generate": {"store": dreams, "sampler": {"policy": str(here / "policy")}},
        "audit": {"store": dreams, "dir": audit_dir},
        "quality": {"dream_store": dreams, "labels": f"{audit_dir}/labels.json", "out": quality},
        "filter": {"store": dreams, "quality": quality},
    })
    return out


def sweep_config(cfg: DictConfig) -> DictConfig:
    """The sweep measures the last round's dreams (``run_dir/round<R>/sweep`` after several rounds)."""
    rounds = int(cfg.pipeline.rounds)
    if rounds == 1:
        return cfg
    out = cfg.copy()  # the run's own identity: only sweep.* (not part of it) changes
    out.sweep.dream_store = str(round_config(cfg, rounds).filter.store)
    out.sweep.dir = str(Path(cfg.run_dir) / f"round{rounds}" / "sweep")
    return out


def check_robot(cfg: DictConfig) -> None:
    """A robot without a simulator runs the pipeline without its audits (nothing to replay dreams in), its filter
    at a given threshold, and its sweep judged in the world model's dream — each asked for by name."""
    from dreamgen.errors import ConfigError

    robot = embodiment(cfg)
    if robot.has_simulator:
        return
    if sweep.judge(cfg) != "dream":
        raise ConfigError(f"`dreamgen pipeline` on embodiment {robot.name}, which has no simulator: its sweep can only "
                          "be judged in the world model's dream; set sweep.judge=dream (or run train-world-model, "
                          "generate, train-quality, filter and export one by one: README, Bring your own robot)")
    if cfg.filter.quality_threshold == "auto":
        raise ConfigError(f"filter.quality_threshold=auto tunes the threshold on dreams replayed in a simulator, and "
                          f"embodiment {robot.name} has none; give filter.quality_threshold=<probability>, e.g. 0.5")


def stages(cfg: DictConfig) -> list[tuple[str, Callable[[DictConfig], Any]]]:
    """The pipeline's stages in order: (ledger key, the verb's run function). Round ``r > 1``'s stages
    are keyed ``<stage>@<r>``; the sweep after ``R > 1`` rounds is ``sweep@<R>``."""
    out: list[tuple[str, Callable[[DictConfig], Any]]] = [("collect", collect.run),
                                                          ("world_model", train_world_model.run)]
    from policies.samplers import sampler_kind

    verbs: dict[str, Callable[[DictConfig], Any]] = {
        "train_policy": train_policy.run, "generate": generate.run,
        "audit_replay": lambda c: audit.run(c, report=False),  # real outcomes: the quality model's training data
        "train_quality": train_quality.run, "filter": filter_verb.run, "audit": audit.run}
    # the sampler (or its prior) is the real-only BC policy
    uses_policy = sampler_kind(cfg.generate.sampler.kind).uses_trained_policy
    replays = embodiment(cfg).has_simulator  # a robot without a simulator: no audit (check_robot)
    each = [name for name in ROUND_STAGES if replays or not name.startswith("audit")]
    first = [name for name in each if name != "train_policy" or uses_policy]
    out += [(name, verbs[name]) for name in first]
    rounds = int(cfg.pipeline.rounds)
    for r in range(2, rounds + 1):
        out += [(f"{name}@{r}", lambda c, verb=verbs[name], r=r: verb(round_config(c, r))) for name in each]
    out.append(("sweep" if rounds == 1 else f"sweep@{rounds}", lambda c: sweep_stage(sweep_config(c))))
    return out


def sweep_stage(cfg: DictConfig) -> dict[str, Any]:
    """The sweep; when the filter accepted no dream there is nothing to mix: the real-only arms run alone and
    the report says so (the finished stages stay, and a rerun with a looser filter is a new run_dir)."""
    if not sweep.nothing_to_mix(cfg):
        return sweep.run(cfg)
    log.warning("pipeline: the filter accepted no dream of %s, so there is nothing to mix; only the real-only "
                "arms run", cfg.sweep.dream_store)
    return {**sweep.run(sweep.real_only(cfg)), "nothing_to_mix": True}


class StageLedger:
    """``run_dir/pipeline/stages.json``: the settings of this pipeline and each finished stage's report.

    Written atomically after every stage, so it never names a stage whose output is not committed.
    """

    def __init__(self, run_dir: Path, settings: dict[str, Any]):
        from dreamgen.errors import RunDirError
        from dreamgen.rundir import as_recorded_now, differences

        self.path = run_dir / "pipeline" / "stages.json"
        self.record: dict[str, Any] = {"settings": settings, "done": {}}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
                old_settings, done = old["settings"], dict(old["done"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise RunDirError(f"{self.path} is corrupt ({exc}); delete it to run every stage again") from exc
            changed = [c for c in differences(as_recorded_now(old_settings), settings) if not c.startswith(ROUND_FREE)]
            if "pipeline.round_cap" not in old_settings or not any("@" in stage for stage in done):
                changed = [c for c in changed if not c.startswith("pipeline.round_cap=")]  # no later round ran
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
        stop_if_signalled()
        return report

    def seconds(self, names: list[str]) -> float:
        """The stages' own time, summed over resumed runs."""
        return sum(float(self.record["done"][name]["seconds"]) for name in names)


def run(cfg: DictConfig) -> dict:
    from dreamgen.rundir import write_json

    check_robot(cfg)
    collect.collect_spec(cfg)  # fail fast on every stage's config and on the instructions
    train_world_model.ensemble_config(cfg)
    train_world_model.contact_gate(cfg, embodiment(cfg), train_world_model.model_kind(cfg).images)
    train_world_model.dream_config(cfg)
    generate.check_config(cfg)
    requests = generate.check_instructions(cfg, tuple(embodiment(cfg).check_tasks(cfg.tasks)))  # data: every task
    generate.check_rule(cfg, requests)
    train_quality.quality_config(cfg)
    filter_verb.filter_config(cfg)
    filter_verb.check_auto_threshold(cfg, requests)
    sweep.check_config(cfg, model_made_later=True)
    check_rounds(cfg)
    with run_verb(cfg, "pipeline") as (run_dir, tracker):
        from dreamgen.tracking import flatten

        unresolved = OmegaConf.to_container(cfg, resolve=False)  # paths stay ${run_dir}/...: the run may move
        assert isinstance(unresolved, dict)
        settings = {k: v for k, v in flatten(unresolved).items()  # what can change results, not where or how fast
                    if k.split(".")[0] not in ("run_dir", "tracking", "progress", "hydra")
                    and k.split(".")[-1] not in ("workers", "address")}
        ledger = StageLedger(run_dir, settings)
        report: dict[str, Any] = {}
        todo = stages(cfg)
        for name, stage in todo:
            result = ledger.run(name, functools.partial(stage, cfg))
            if not name.startswith("audit_replay"):
                report["sweep" if name.startswith("sweep") else name] = result
        report["seconds"] = ledger.seconds([name for name, _ in todo])

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

"""``dreamgen sweep``: the augmentation-ratio experiment — caps × training seeds, each trained and evaluated.

Every arm (cap, seed) trains the BC policy on the real demos plus the accepted dreams of
``sweep.dream_store`` at ``policy.max_dream_fraction = cap`` (cap 0 = real only) and evaluates it on
the real simulator, on the same layouts as every other arm (EVALUATION.md §1–2). Arms run one after
another in this process or as Ray tasks (``sweep.workers``), each in its own run dir under
``sweep.dir``; a rerun skips the arms already finished on the same dream selection. One MLflow parent
run holds a child per arm, the plot of success vs cap, the per-task table and the recommended cap.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jobs.common import hydra_main, identity, log, plain, progress, run_verb, stop_if_signalled

ARM_FILE = "arm.json"


def check_config(cfg: DictConfig, *, model_made_later: bool = False) -> None:
    """Refuse bad ``sweep.*`` (and the ``policy``/``evaluate`` values every arm uses) before any arm runs;
    ``model_made_later``: the judging world model is trained before the sweep (the pipeline), not checked yet."""
    from dreamgen.errors import ConfigError
    from dreamgen.mix import check_fraction
    from jobs import evaluate, train_policy

    s = cfg.sweep
    caps = [check_fraction(c, "sweep.caps[]") for c in s.caps]
    if 0.0 not in caps:
        raise ConfigError(f"sweep.caps={list(s.caps)} must include 0: the real-only arm every cap is compared with")
    if len(set(caps)) != len(caps):
        raise ConfigError(f"sweep.caps={list(s.caps)} repeats a cap")
    names: dict[str, float] = {}
    for cap in caps:  # an arm is named by its cap (cap0.5-seed0): two caps with one name would be one arm
        if f"{cap:g}" in names:
            raise ConfigError(f"sweep.caps: {names[f'{cap:g}']!r} and {cap!r} name the same arm (cap{cap:g}); give "
                              "caps that differ within 6 significant digits")
        names[f"{cap:g}"] = cap
    seeds = list(s.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) for x in seeds):
        raise ConfigError(f"sweep.seeds={seeds}; give distinct integer training seeds, e.g. [0, 1, 2]")
    if not isinstance(s.control, bool):
        raise ConfigError(f"sweep.control={s.control!r}; must be true or false")
    if not isinstance(s.workers, int) or s.workers < 0:
        raise ConfigError(f"sweep.workers={s.workers!r}; must be an integer >= 0 (0 = arms one after another here)")
    if s.get("family") is not None:
        from policies.families import get

        get(s.family, where="sweep.family", trained=True)
    if s.get("judge", "real") not in JUDGES:
        raise ConfigError(f"sweep.judge={s.judge!r}; accepted: {', '.join(JUDGES)} (real: the simulator, dream: the "
                          "world model at evaluate.world_model, both: each arm both ways)")
    train_policy.check_config(cfg)
    if judge(cfg) != "dream":
        evaluate.check_config(real_cfg(cfg))
    if judge(cfg) != "real":
        evaluate.check_config(evaluate.in_the_dream(cfg))
        if not model_made_later:
            evaluate.judging_model(evaluate.in_the_dream(cfg))  # refused now, not after the first arm trained


JUDGES = ("real", "dream", "both")


def judge(cfg: Any) -> str:
    """How the arms are evaluated: ``sweep.judge`` (real | dream | both)."""
    return str(cfg.sweep.get("judge", "real"))


def real_cfg(cfg: DictConfig) -> DictConfig:
    """The same config with ``evaluate.where=real``: the sweep's judge decides where its arms are evaluated."""
    out = cfg.copy()
    out.evaluate.where = "real"
    return out


def dream_view(dream: dict[str, Any]) -> dict[str, Any]:
    """A dream judgement as the sweep reads an arm's evaluation (``tasks``, ``overall``; see ``as_episodes``)."""
    return {"tasks": as_episodes(dream), "overall": {**dream["overall"], "episodes": dream["overall"]["judged"]}}


def as_judged(arm: dict[str, Any], way: str) -> dict[str, Any]:
    """An arm as ``sweep.judge=way`` reads it: with ``dream``, its dream judgement in place of real success."""
    if way != "dream" or arm.get("judged_in") == "dream":
        return arm
    return {**arm, **dream_view(arm["dream"]), "judged_in": "dream"}


def as_episodes(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A dream judgement's task rows in the sweep's terms: its judged dreams count as the episodes (starts x
    members, halted dreams left out — not independent episodes, so the sweep's Wilson intervals are too narrow)."""
    return [{**row, "episodes": row["judged"]} for row in summary["tasks"]]


def arm_family(cfg: DictConfig) -> str:
    """The policy family every arm trains: ``sweep.family``, else ``policy.family``."""
    return str(cfg.sweep.get("family") or cfg.policy.family)


def arm_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The resolved config of every arm: its own run dir, cap, dream store (none at cap 0) and seed, then
    (``sweep.control``) a control arm per cap > 0 and seed: the same share filled with re-drawn real frames."""
    resolved = plain(cfg)
    arms = []
    caps = sorted(float(c) for c in cfg.sweep.caps)
    for control in (False, True) if cfg.sweep.control else (False,):
        for cap in caps if not control else [c for c in caps if c > 0]:
            for seed in cfg.sweep.seeds:
                arm = copy.deepcopy(resolved)
                arm["run_dir"] = str(Path(cfg.sweep.dir) / f"{'control' if control else 'cap'}{cap:g}-seed{seed}")
                arm["policy"].update(max_dream_fraction=cap, seed=int(seed), control=control,
                                     family=arm_family(cfg),
                                     dream_store=cfg.sweep.dream_store if cap > 0 and not control else None)
                arm["progress"] = False
                arms.append(arm)
    return arms


def run_arm(config: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one arm in its run dir; writes ``arm.json`` last (its presence = the arm is done)."""
    from dreamgen.rundir import open_run_dir, staged, write_json
    from jobs import evaluate, train_policy

    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = OmegaConf.create(config)
    with open_run_dir(cfg.run_dir, identity(cfg)) as run_dir:
        losses: list[float] = []
        started = time.perf_counter()
        policy, metrics = train_policy.train(cfg, on_epoch=lambda _, loss: losses.append(loss))
        trained = time.perf_counter()
        with staged(run_dir / "policy") as partial:
            policy.save(partial)
        way = judge(cfg)
        dream = evaluate.evaluate_policy(evaluate.in_the_dream(cfg), policy) if way != "real" else None
        summary = evaluate.evaluate_policy(real_cfg(cfg), policy) if way != "dream" else dream_view(dream)
        seconds = {"train": trained - started, "evaluate": time.perf_counter() - trained}
        result = {"cap": float(cfg.policy.max_dream_fraction), "seed": int(cfg.policy.seed),
                  "control": bool(cfg.policy.control), "judged_in": "dream" if way == "dream" else "real",
                  "run_dir": str(run_dir), "tasks": summary["tasks"], "overall": summary["overall"],
                  "achieved_fraction": metrics["policy/achieved_dream_fraction"], "metrics": metrics,
                  "train_mse": losses, "dream_selection": policy.info["dream_selection"], "seconds": seconds}
        if dream is not None:
            result["dream"] = dream
        write_json(run_dir / ARM_FILE, result)
        return result


def mixes(cfg: DictConfig) -> bool:
    """Whether any arm mixes dreams in (a cap above 0 whose arm is not a control)."""
    return any(float(c) > 0 for c in cfg.sweep.caps)


def nothing_to_mix(cfg: DictConfig) -> bool:
    """The sweep would mix dreams, but the filter accepted none of them."""
    return mixes(cfg) and not current_selection(cfg)["episodes"]


def real_only(cfg: DictConfig) -> DictConfig:
    """The same sweep with its real-only arms alone (cap 0, no control)."""
    out = cfg.copy()
    out.sweep.caps, out.sweep.control = [0.0], False
    return out


def current_selection(cfg: DictConfig) -> dict[str, Any]:
    """The dreams the arms would consume now (store digest, filter thresholds, selected episode ids)."""
    from dreamgen.data.store import TrajectoryStore
    from jobs.train_policy import dream_selection

    return dream_selection(TrajectoryStore.open(cfg.sweep.dream_store), list(cfg.policy.dream_verdicts))[1]


def finished(config: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any] | None:
    """The arm's result if it already ran on this dream selection; a stale arm's outputs are removed.

    An arm dir that holds another configuration (say, other ``policy.epochs``) is refused, not reused.
    """
    from dreamgen.rundir import check_run_dir

    check_run_dir(config["run_dir"], identity(OmegaConf.create(config)))
    path = Path(config["run_dir"]) / ARM_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    way = judge(OmegaConf.create(config))
    if (way != "real" and "dream" not in result) or (way != "dream" and result.get("judged_in") == "dream"):
        log.info("arm %s was not evaluated the way sweep.judge=%s asks; training and evaluating it again",
                 config["run_dir"], way)
        path.unlink()
        shutil.rmtree(Path(config["run_dir"]) / "policy", ignore_errors=True)
        return None
    used = result["dream_selection"]
    keys = ("store_digest", "episode_ids_digest", "filter")
    if used is None or used.get("control") or all(used.get(k) == selection[k] for k in keys):
        return result
    log.info("arm %s consumed another dream selection; training it again", config["run_dir"])
    path.unlink()
    shutil.rmtree(Path(config["run_dir"]) / "policy", ignore_errors=True)
    return None


def run_arms(cfg: DictConfig, todo: list[dict[str, Any]], on_result: Any) -> None:
    """Run ``todo`` arms in this process (``sweep.workers=0``) or as Ray tasks, one CPU each."""
    if cfg.sweep.workers == 0 or len(todo) <= 1:
        for config in todo:
            on_result(run_arm(config))
        return
    from generation.service import run_tasks
    from jobs.sweep import run_arm as arm  # by reference: Ray workers import it, even when this file is __main__

    run_tasks(arm, todo, workers=cfg.sweep.workers, address=cfg.sweep.address, on_result=on_result)


def plot_sweep(report: dict[str, Any], arms: list[dict[str, Any]], path: Path) -> None:
    """Success vs cap: pooled rate with its Wilson 95% interval, each seed's rate, and each task's rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = report["caps"]
    rows = [report["per_cap"][f"{c:g}"] for c in caps]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    rate = [r["success_rate"] for r in rows]
    ax.errorbar(caps, rate, yerr=[[r["success_rate"] - r["ci95_low"] for r in rows],
                                  [r["ci95_high"] - r["success_rate"] for r in rows]],
                fmt="o-", capsize=4, color="k", label="pooled (Wilson 95%)")
    dream_arms = [a for a in arms if not a.get("control")]
    ax.scatter([a["cap"] for a in dream_arms], [a["overall"]["success_rate"] for a in dream_arms], s=14, alpha=0.6,
               label="one training seed")
    controlled = [(c, r["control"]) for c, r in zip(caps, rows, strict=True) if "control" in r]
    if controlled:
        ax.errorbar([c for c, _ in controlled], [r["success_rate"] for _, r in controlled],
                    yerr=[[r["success_rate"] - r["ci95_low"] for _, r in controlled],
                          [r["ci95_high"] - r["success_rate"] for _, r in controlled]],
                    fmt="s--", capsize=4, color="tab:red", label="control: re-drawn real frames")
    ax.axhline(rows[0]["success_rate"], ls=":", color="grey", label="real only")
    ylabel = "success judged in the dream" if report.get("judged_in") == "dream" else "real-simulator success"
    ax.set(xlabel="max_dream_fraction (cap)", ylabel=ylabel, title="all tasks",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    for task in report["tasks"]:
        bx.plot(caps, [r["tasks"][task]["success_rate"] for r in rows], "o-", label=task)
    bx.set(xlabel="max_dream_fraction (cap)", title="per task (pooled over seeds)", ylim=(-0.02, 1.02))
    bx.legend(fontsize=7)
    fig.suptitle(report["verdict"], fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arm_name(arm: dict[str, Any]) -> str:
    return Path(arm["run_dir"]).name


def dream_judge(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """With ``sweep.judge=both``: every arm's dream-judged and real success, how far the dream's ranking of the
    arms holds (Pearson, Spearman, MMRV, regret@1), and the cap the dream would have recommended."""
    from dreamgen.judge import ranking
    from dreamgen.sweep import analyse

    dream = [a["dream"]["overall"]["success_rate"] for a in arms]
    real = [a["overall"]["success_rate"] for a in arms]
    as_real = [as_judged(a, "dream") for a in arms]
    return {"ranking": ranking(dream, real), "dream_recommended_cap": analyse(as_real)["recommended_cap"],
            "arms": [{"arm": arm_name(a), "dream": d, "real": r, "unjudged": a["dream"]["overall"]["unjudged"]}
                     for a, d, r in zip(arms, dream, real, strict=True)],
            "judge": arms[0]["dream"]["judge"]}


def format_judge(judged: dict[str, Any]) -> str:
    r = judged["ranking"]
    return (f"the dream as judge of these {r['policies']} arms ({judged['judge']['head']}): Pearson {r['pearson']:.2f}, "
            f"Spearman {r['spearman']:.2f}, MMRV {r['mmrv']:.3f}, regret@1 {r['regret_at_1']:.3f}; the dream would "
            f"recommend cap {judged['dream_recommended_cap']:g}")


def plot_judge(judged: dict[str, Any], path: Path) -> None:
    """Dream-judged against real success, one point per arm, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for row in judged["arms"]:
        ax.scatter(row["real"], row["dream"], s=18, color="tab:red" if row["arm"].startswith("control") else "k")
        ax.annotate(row["arm"], (row["real"], row["dream"]), fontsize=6)
    ax.set(xlabel="real-simulator success", ylabel="success judged in the dream", xlim=(-0.02, 1.02),
           ylim=(-0.02, 1.02), title=format_judge(judged)[:60] + "...")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: DictConfig) -> dict:
    from dreamgen import tracking
    from dreamgen.rundir import write_json
    from dreamgen.sweep import analyse, format_sweep

    check_config(cfg)
    configs = arm_configs(cfg)
    selection = current_selection(cfg) if mixes(cfg) else None  # a real-only sweep (caps [0]) needs no dreams
    if selection is not None and not selection["episodes"]:
        from dreamgen.errors import ConfigError

        raise ConfigError(f"sweep.dream_store={cfg.sweep.dream_store}: the filter accepted no dream (verdicts "
                          f"{list(cfg.policy.dream_verdicts)}), so there is nothing to mix; loosen the filter "
                          "(`dreamgen filter`, e.g. filter.quality_threshold) or sweep only real data "
                          "(sweep.caps=[0] sweep.control=false)")
    with run_verb(cfg, "sweep") as (run_dir, tracker):
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for config in configs:
            result = finished(config, selection)
            if result is None:
                todo.append(config)
            else:
                results[config["run_dir"]] = result
        log.info("sweep: %d arms (%d already finished) under %s", len(configs), len(results), cfg.sweep.dir)
        bar = progress(None, cfg, total=len(configs), initial=len(results), desc="sweep", unit="arm")

        def on_result(result: dict[str, Any]) -> None:
            results[result["run_dir"]] = result
            bar.update(1)
            bar.set_postfix(cap=result["cap"], seed=result["seed"], success=f"{result['overall']['success_rate']:.2f}")
            stop_if_signalled()  # the arm is committed

        run_arms(cfg, todo, on_result)
        bar.close()
        arms = [as_judged(results[c["run_dir"]], judge(cfg)) for c in configs]
        for config, arm in zip(configs, arms, strict=True):  # one child run per arm, in arm order
            with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment,
                                    f"{cfg.name}/sweep/{Path(arm['run_dir']).name}",
                                    config_yaml=OmegaConf.to_yaml(OmegaConf.create(config)), params=config,
                                    tags={"dreamgen.verb": "sweep-arm", "dreamgen.run_dir": arm["run_dir"]}) as child:
                for epoch, loss in enumerate(arm["train_mse"]):
                    if epoch % max(1, len(arm["train_mse"]) // 50) == 0 or epoch == len(arm["train_mse"]) - 1:
                        child.log_metrics({"policy/train_mse": loss}, step=epoch)
                in_dream = arm.get("judged_in") == "dream"
                prefix = "dream" if in_dream else "policy"  # never a dream as real success
                child.log_metrics({f"arm/{k}_seconds": v for k, v in (arm.get("seconds") or {}).items()})
                child.log_metrics({**arm["metrics"], f"{prefix}/success_rate": arm["overall"]["success_rate"],
                                   f"{prefix}/success_ci95_low": arm["overall"]["ci95_low"],
                                   f"{prefix}/success_ci95_high": arm["overall"]["ci95_high"],
                                   **{f"{prefix}/success_rate/{t['task']}": t["success_rate"] for t in arm["tasks"]}})
                if "dream" in arm and not in_dream:
                    child.log_metrics({"dream/success_rate": arm["dream"]["overall"]["success_rate"],
                                       "dream/unjudged": arm["dream"]["overall"]["unjudged"]})
                child.log_dict({k: arm[k] for k in ("tasks", "overall", "dream_selection")}, "arm.json")
        report = analyse(arms)
        report["judged_in"] = "dream" if judge(cfg) == "dream" else "real"
        if judge(cfg) == "dream":
            report["verdict"] = "JUDGED IN THE DREAM (no real episode ran): " + report["verdict"]
        if judge(cfg) == "both":
            report["judge"] = dream_judge(arms)
        report["dream_selection"] = selection
        report["samplers"] = next((a["dream_selection"]["samplers"] for a in arms
                                   if a["dream_selection"] and not a.get("control")), {})
        report["episodes_per_task"] = int(cfg.evaluate.n_episodes)
        report["arms"] = [{**{k: a.get(k, False) for k in ("cap", "seed", "control", "run_dir", "overall",
                                                           "achieved_fraction")}, "seconds": a.get("seconds")}
                          for a in arms]
        report["family"] = arm_family(cfg)
        table = format_sweep(report) + ("\n\n" + format_judge(report["judge"]) if "judge" in report else "")
        out = Path(cfg.sweep.dir)
        write_json(out / "sweep.json", report)
        (out / "sweep.txt").write_text(table + "\n")
        plot_sweep(report, arms, out / "sweep.png")
        if "judge" in report:
            plot_judge(report["judge"], out / "sweep_judge.png")
            tracker.log_artifact(out / "sweep_judge.png")
            tracker.log_metrics({f"sweep/judge_{k}": v for k, v in report["judge"]["ranking"].items()
                                 if isinstance(v, float)})
        for key, row in report["per_cap"].items():
            tracker.log_metrics({f"sweep/success/cap_{key}": row["success_rate"], f"sweep/gain/cap_{key}": row["gain"],
                                 f"sweep/gain_ci95_low/cap_{key}": row["gain_ci95"][0],
                                 f"sweep/gain_ci95_high/cap_{key}": row["gain_ci95"][1]})
        tracker.log_metrics({"sweep/recommended_cap": report["recommended_cap"], "sweep/best_cap": report["best_cap"]})
        tracker.log_dict(report, "sweep.json")
        tracker.log_text(table, "sweep.txt")
        tracker.log_artifact(out / "sweep.png")
        where = ("judged in the dream of " + str(cfg.evaluate.world_model) + ", NOT on the real simulator"
                 if judge(cfg) == "dream" else "real-simulator")
        log.info("sweep over caps %s x seeds %s (%d %s episodes per task per arm; dreams from %s):\n%s",
                 report["caps"], report["seeds"], report["episodes_per_task"], where, report["samplers"] or "none", table)
        return report


main = hydra_main(run)

if __name__ == "__main__":
    main()

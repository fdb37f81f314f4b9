"""``dreamgen audit`` (EVALUATION.md §4): replay dreams in the real simulator; how precise is the filter?

Samples up to ``audit.per_task`` replayable dreams per task (a real start seed, not novel), replays each
one's actions open-loop from that seed (labels cached in ``audit.dir/labels.json``: a rerun replays only
new dreams), then reports on the ``test`` fold — dreams no quality model or threshold was fitted on —
precision / recall / acceptance with Wilson 95% intervals, overall and per task, for:

- ``accept-all``: every dream;
- ``dream-success``: dreams the world model says succeeded;
- ``disagreement-only``: dream-success dreams whose max ensemble disagreement is within the filter's
  bound (``filter.disagreement_step`` x the world model's halting bound);
- ``disagreement-tuned``: the same with the threshold chosen like the learned filter's (the lowest that
  reaches ``filter.target_precision`` on the fit fold);
- ``task-only``: every dream of a task whose fit-fold dreams reach the target precision (what knowing
  the task alone buys);
- ``learned-filter``: the verdicts of ``dreamgen filter`` (when the store has been filtered).

Writes ``audit.json`` and ``dreams_vs_real.png`` (hand/object paths of a few dreams and their replays);
for image dreams also ``strips/*.png`` (``audit.plots`` dreams per task: the decoded frames above the real
replay's camera frames), all logged to MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from jobs.common import embodiment, hydra_main, log, progress, run_verb, safety


def plot_dreams(store, indices, path: Path, robot: Any) -> None:
    """The embodiment's parts (hand, object) x/y/z over time: each dream (dashed) next to its real replay
    (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dreamgen.quality.audit import replay_episode
    from dreamgen.world_model.metrics import predicted_parts

    shown = predicted_parts(robot.layout, robot.parts)
    fig, axes = plt.subplots(len(indices), max(len(shown), 1), figsize=(11, 2.6 * len(indices)), squeeze=False)
    for row, index in enumerate(indices):
        episode = store.episode(int(index), images=False)
        real = replay_episode(episode, robot)
        for col, (name, part) in enumerate(shown.items()):
            ax = axes[row, col]
            for k, (axis, colour) in enumerate(zip("xyz"[:part.stop - part.start], ("tab:red", "tab:green", "tab:blue"),
                                                   strict=False)):
                ax.plot(1000 * real["real_obs"][:, part][:, k], color=colour, label=f"real {axis}")
                ax.plot(1000 * episode.obs[:, part][:, k], color=colour, ls="--", label=f"dream {axis}")
            verdict = episode.meta.get("verdict") or "unfiltered"
            ax.set_title(f"{episode.meta['task']} {name} (mm): dream success {bool(episode.success.any())}, "
                         f"real {real['real_success']}, {verdict}", fontsize=8)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def dream_strips(store, meta, indices, out: Path, robot: Any, per_task: int) -> list[Path]:
    """Image dreams: for up to ``per_task`` dreams per task, a strip of the dream's decoded frames above the
    real camera frames of its replay (same seed, same actions)."""
    from dreamgen.strips import save_strip

    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for task in sorted(set(meta["task"][indices].tolist())):
        for index in [i for i in indices if meta["task"][i] == task][:per_task]:
            episode = store.episode(int(index))
            real = robot.replay(task, int(episode.meta["seed"]), episode.action, cameras=store.cameras)
            verdict = episode.meta.get("verdict") or "unfiltered"
            name = (f"strip_{episode.meta['episode_id']}_dream-{'success' if episode.success.any() else 'fail'}"
                    f"_real-{'success' if real['success'] else 'fail'}_{verdict}.png")
            paths.append(save_strip(episode.images, real["images"][:len(episode)], out / name))
    return paths


def run(cfg: DictConfig, *, report: bool = True) -> dict:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError
    from dreamgen.quality.audit import assign_folds, load_labels, replay_dreams, sample_for_audit
    from dreamgen.rundir import write_json

    a = cfg.audit
    if not isinstance(a.per_task, int) or a.per_task < 1 or not 0 < a.test_fraction < 1:
        raise ConfigError(f"audit.per_task={a.per_task!r} must be an integer >= 1 and audit.test_fraction="
                          f"{a.test_fraction!r} in (0, 1)")
    robot = embodiment(cfg)
    robot.require_simulator("audit", "judge its dreams by the learned filter alone, or audit them on the robot "
                                     "(their provenance names the start each one needs)")
    labels_safety = safety(cfg, robot)  # safety.* refused before anything runs
    store = TrajectoryStore.open(a.store)
    robot.check_recorded(store.info.get("embodiment"), f"dream store {a.store}")
    meta = store.meta()
    picked = sample_for_audit(meta, a.per_task, cfg.seed)
    if not len(picked):
        raise ConfigError(f"{a.store}: no dream can be audited (each needs a real start seed and a known task)")
    with run_verb(cfg, "audit", inputs={"dream": store}) as (run_dir, tracker):
        out = Path(str(a.dir))
        labels_path = out / "labels.json"
        labels = load_labels(labels_path)
        todo = [int(i) for i in picked if meta["episode_id"][i] not in labels]
        bar = progress(None, cfg, total=len(todo), desc="audit replay", unit="ep")
        kept: list | None = [] if labels_safety is not None else None
        replayed = replay_dreams((store.episode(i, images=False) for i in todo), labels, robot, on_episode=lambda: bar.update(1),
                                 safety=labels_safety, keep=kept)
        bar.close()
        if kept:  # the replays are real, labelled episodes: what a safety head can learn from too
            keep_replays(out / "replays.zarr", kept, store, labels_safety)
        assign_folds(labels, a.test_fraction)  # the folds follow the configured fraction
        write_json(labels_path, labels)
        log.info("audit: replayed %d dreams (%d labelled in all) in the real simulator", replayed, len(labels))
        result: dict = {"store": str(a.store), "store_digest": store.digest(), "replayed": replayed,
                        "labelled": len(labels)}
        if report:
            result.update(audit_report(store, meta, picked, labels, cfg))
            write_json(out / "audit.json", result)
            tracker.log_dict(result, "audit.json")
            test = [i for i in picked if labels[meta["episode_id"][i]]["fold"] == "test"]
            if a.plots > 0 and test:
                rng = np.random.default_rng(cfg.seed)
                plot_dreams(store, rng.choice(test, size=min(a.plots, len(test)), replace=False), out / "dreams_vs_real.png",
                            robot)
                tracker.log_artifact(out / "dreams_vs_real.png")
            if a.plots > 0 and test and store.cameras is not None:  # pictures: the dream above its real replay
                for path in dream_strips(store, meta, test, out / "strips", robot, a.plots):
                    tracker.log_artifact(path, "strips")
            metrics = {}
            for name, entry in result["filters"].items():
                for key in ("precision", "recall", "acceptance"):
                    value = entry["overall"][key]["value"]
                    if np.isfinite(value):
                        metrics[f"audit/{name}/{key}"] = value
            tracker.log_metrics(metrics)
            log.info("audit on %d held-out dreams:\n%s", result["test_dreams"], format_audit(result))
        return result


def keep_replays(path: Path, episodes: list, dreams: Any, safety: Any) -> None:
    """Append the replays to ``path`` (a labelled real store, made on first use), each id once: a rerun after
    an interruption between this and ``labels.json`` replays those dreams again, and they are kept once.
    ``world_model.safety_head.replays`` trains a safety head on the ``fit`` fold's."""
    from dreamgen.data.store import TrajectoryStore

    if path.exists():
        replays = TrajectoryStore.open(path, mode="r+")
        have = set(replays.meta(["episode_id"])["episode_id"].tolist())
    else:
        replays = TrajectoryStore.create(path, obs_dim=dreams.obs_dim, action_dim=dreams.action_dim,
                                         info={"embodiment": dreams.info.get("embodiment"),
                                               "replays_of": str(dreams.path)}, safety=safety.describe())
        have = set()
    replays.append([e for e in episodes if e.meta["episode_id"] not in have])


def audit_report(store, meta, picked, labels, cfg) -> dict:
    from dreamgen.quality.audit import compare_filters
    from dreamgen.quality.filter import pick_threshold
    from dreamgen.world_model.checkpoint import load_world_model

    ids = meta["episode_id"][picked]
    fold = np.array([labels[e]["fold"] for e in ids])
    real = np.array([labels[e]["real_success"] for e in ids], bool)
    dream_success = meta["success"][picked]
    dis = meta["disagreement_max"][picked].astype(float)
    fit, test = fold == "fit", fold == "test"
    # disagreement-tuned: the learned filter's target-precision rule, on disagreement alone (fit fold)
    target = float(cfg.filter.target_precision)
    chosen = pick_threshold(-dis, real, dream_success & fit, target)
    model = load_world_model(cfg.filter.world_model)
    bound = model.disagreement_bound * float(cfg.filter.disagreement_step)
    tasks = meta["task"][picked]
    good_tasks = [t for t in set(tasks[fit].tolist()) if real[fit & (tasks == t)].mean() >= target]
    filters = {"accept-all": np.ones(len(ids), bool), "dream-success": dream_success,
               "disagreement-only": dream_success & (dis <= bound),
               "disagreement-tuned": dream_success & (-dis >= chosen["threshold"]),
               "task-only": np.isin(tasks, good_tasks)}
    filtered = bool((meta["verdict"][picked] != "").all())
    if filtered:
        filters["learned-filter"] = meta["verdict"][picked] == "accept"
    report = compare_filters({k: v[test] for k, v in filters.items()}, real[test], tasks[test])
    result = {"test_dreams": int(test.sum()), "fit_dreams": int(fit.sum()), "filters": report,
              "disagreement_bound": bound, "disagreement_tuned_threshold": -chosen["threshold"],
              "task_only_tasks": sorted(good_tasks), "filter_info": store.info.get("filter"),
              "filtered": filtered}
    if "risk" in tuple(model.heads) and all("unsafe" in labels[e] for e in ids):
        result["safety"] = safety_report(store, picked[test], labels, model,
                                         meta["reason"][picked[test]] if filtered else None)
    return result


def safety_report(store, indices, labels, model, reasons) -> dict:
    """The safety head's foresight on the held-out audited dreams against what their real replays raised
    (``dreamgen.quality.audit.unsafe_audit``); with ``reasons`` (a filtered store's), the filter's ``unsafe:``
    rejections too."""
    from dreamgen.language import default_encoder
    from dreamgen.quality.audit import unsafe_audit
    from dreamgen.quality.filter import prediction
    from dreamgen.world_model.risk import predicted_events

    episodes = [store.episode(int(i), images=False) for i in indices]
    texts = sorted({str(e.meta["instruction"]) for e in episodes})
    embedding = dict(zip(texts, default_encoder().encode(texts), strict=True)) if texts else {}
    predicted = [predicted_events(model, prediction(model, e, embedding[str(e.meta["instruction"])])) for e in episodes]
    raised = [labels[str(e.meta["episode_id"])]["unsafe"] for e in episodes]
    report = unsafe_audit(predicted, raised, model.risk.events, reasons)
    return {"world_model_id": model.info.get("world_model_id"), "dreams": len(indices), **report}


def format_audit(result: dict) -> str:
    lines = [f"{'filter':20s} {'precision':>24s} {'recall':>24s} {'accepted':>9s}"]
    for name, entry in result["filters"].items():
        o = entry["overall"]
        cells = [f"{o[k]['value']:.2f} [{o[k]['ci95'][0]:.2f},{o[k]['ci95'][1]:.2f}] {o[k]['hits']:3d}/{o[k]['of']:<3d}"
                 for k in ("precision", "recall")]
        lines.append(f"{name:20s} {cells[0]:>24s} {cells[1]:>24s} {o['accepted']:9d}")
    return "\n".join(lines)


main = hydra_main(run)

if __name__ == "__main__":
    main()

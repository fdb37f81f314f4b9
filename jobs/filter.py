"""``dreamgen filter``: a verdict and a reason for every dream, written back to the dream store.

Physical checks (finite, action bounds, support of real data, teleports), the world model's ensemble
disagreement on each dream's own transitions, and the learned quality score (see
``dreamgen.quality.filter``). ``filter.quality_threshold=auto`` picks the lowest threshold that reaches
``filter.target_precision`` on the out-of-fold scores of audited fit-fold dreams. Frames are never touched
and nothing is deleted; the thresholds used are recorded in the store's ``info["filter"]``, written
last, with a fingerprint of the verdict columns: a store whose verdicts changed since (or whose filter
was interrupted between the columns and the record) is refused by training.
"""

from __future__ import annotations

import collections

import numpy as np
from omegaconf import DictConfig

from jobs.common import embodiment, hydra_main, log, progress, run_verb, safety

VERDICTS = ("accept", "reject")  # the verdict column's values (why: the reason column)
VERDICT_FIELDS = ("quality", "reason", "verdict")  # the columns the filter writes; its record fingerprints them


def filter_config(cfg: DictConfig):
    from dreamgen.errors import ConfigError
    from dreamgen.quality.filter import FilterConfig

    f = cfg.filter
    threshold = f.quality_threshold
    if threshold != "auto" and not isinstance(threshold, (int, float)):
        raise ConfigError(f"filter.quality_threshold={threshold!r}; must be a number in [0, 1] or auto")
    return FilterConfig(quality_threshold=None if threshold == "auto" else float(threshold),
                        target_precision=f.target_precision, support_margin=f.support_margin,
                        jump_margin=f.jump_margin, disagreement_step=f.disagreement_step,
                        disagreement_mean=f.disagreement_mean)


def check_auto_threshold(cfg: DictConfig, requests) -> None:
    """Before anything runs (the pipeline): ``filter.quality_threshold=auto`` learns its threshold on the fit
    fold and is judged on the test fold, so every task's audit needs two dreams at least (one per fold)."""
    import collections

    from dreamgen.errors import ConfigError

    if cfg.filter.quality_threshold != "auto":
        return
    dreams = collections.Counter()
    for r in requests:
        if not r.novel:  # a novel instruction has no task to replay it in: never audited
            dreams[r.task] += r.count
    for task, count in sorted(dreams.items()):
        audited = min(count, int(cfg.audit.per_task))
        if audited < 2:
            raise ConfigError(f"filter.quality_threshold=auto needs at least 2 audited dreams per task (one to fit "
                              f"the threshold on, one held out); {task} gets {audited} (audit.per_task="
                              f"{cfg.audit.per_task}, {count} dream{'' if count == 1 else 's'} of it); raise audit.per_task and "
                              "generate.episodes to 2 or more, or give filter.quality_threshold=<probability>")


def check_verdicts(verdicts: list[str], field: str) -> None:
    """Refuse a list of verdicts that names something the filter never writes (a reason, a typo)."""
    from dreamgen.errors import ConfigError

    if not verdicts:
        raise ConfigError(f"{field} is empty; accepted: a list of filter verdicts, e.g. [accept]")
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise ConfigError(f"{field}: {verdict!r} is not a filter verdict; accepted: {', '.join(VERDICTS)} "
                              "(why a dream was rejected, e.g. low-quality, is its reason, not its verdict)")


def judge(cfg: DictConfig, store, on_episode=None) -> dict:
    """Score every dream of ``store``: physical reason, disagreement (max, mean), quality probability."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.language import default_encoder
    from dreamgen.quality.filter import PASSED, Support, disagreement, physical_reason, prediction
    from dreamgen.quality.model import QualityModel
    from dreamgen.safety import OBS_EVENTS
    from dreamgen.world_model.checkpoint import load_world_model
    from dreamgen.world_model.risk import predicted_events

    f = cfg.filter
    config = filter_config(cfg)
    quality = QualityModel.load(f.quality)
    model = load_world_model(f.world_model)
    robot = embodiment(cfg)
    robot.check_recorded(model.info.get("embodiment"), f"filter.world_model={f.world_model}")
    robot.check_recorded(store.info.get("embodiment"), f"filter.store={f.store}")
    real = TrajectoryStore.open(f.real_store)
    support = Support.from_episodes(list(real.iter_episodes(images=False)))
    dynamic = slice(*model.layout.dynamic)
    meta = store.meta(["instruction"])
    texts = sorted(set(meta["instruction"].tolist()))
    embedding = dict(zip(texts, default_encoder().encode(texts), strict=True))
    rules = safety(cfg, robot)  # the safety events that are rules on the state: a dreamed state is judged too
    rule_events = [e for e in OBS_EVENTS if rules is not None and e in rules.events]
    physical, dis_max, dis_mean, obs, action, unsafe = [], [], [], [], [], []
    head = "risk" in tuple(model.heads)  # a safety head: the events it foresees on every dream (``predicted``)
    predicted: list[list[str]] = []
    for episode in store.iter_episodes():
        reason = physical_reason(episode, support, config, dynamic)
        raised = [e for e, hit in rules.label_obs(np.nan_to_num(episode.obs), str(episode.meta["task"])).items()
                  if hit.any()] if rule_events else []  # type: ignore[union-attr]
        unsafe.append(raised)
        if reason == PASSED and raised and f.reject_unsafe:
            reason = f"unsafe:{raised[0]}"
        instruction = embedding[episode.meta["instruction"]]
        if head:  # one prediction on the dream's own transitions: its disagreement, and the events the head foresees
            pred = prediction(model, episode, instruction)
            d = pred.disagreement.cpu().numpy()
            foreseen = predicted_events(model, pred)
            predicted.append(foreseen)
            if reason == PASSED and foreseen and f.reject_risk:
                reason = f"unsafe:{foreseen[0]}"
        else:
            d = disagreement(model, episode, instruction)
        physical.append(reason)
        dis_max.append(float(np.max(d)))
        dis_mean.append(float(np.mean(d)))
        obs.append(np.nan_to_num(episode.obs))
        action.append(np.nan_to_num(episode.action))
        if on_episode is not None:
            on_episode()
    cond = np.stack([embedding[t] for t in meta["instruction"]]) if len(obs) else np.zeros((0, quality.cond_dim))
    score = quality.score(obs, action, cond)[0]
    return {"config": config, "bound": model.disagreement_bound, "world_model_id": model.info.get("world_model_id"),
            "quality": quality, "episode_id": store.meta(["episode_id"])["episode_id"],
            "physical": np.array(physical, dtype=object), "dis_max": np.array(dis_max),
            "dis_mean": np.array(dis_mean), "score": np.array(score), "unsafe": unsafe, "rule_events": rule_events,
            "task": store.meta(["task"])["task"], "predicted": predicted,
            "risk_events": list(model.risk.events) if head else []}


def dream_unsafe_rates(judged: dict, key: str = "unsafe", events: str = "rule_events") -> dict[str, dict[str, float]]:
    """Per task, the share of dreams whose dreamed states break each safety rule (the events that are rules
    on the state: ``dreamgen.safety.OBS_EVENTS``), and ``any``; with ``key="predicted"``, ``events=
    "risk_events"``: the share the safety head predicts to raise each event."""
    out: dict[str, dict[str, float]] = {}
    for task in sorted(set(judged["task"].tolist())):
        rows = [u for u, t in zip(judged[key], judged["task"], strict=True) if t == task]
        out[task] = {e: sum(e in u for u in rows) / len(rows) for e in judged[events]}
        out[task]["any"] = sum(bool(u) for u in rows) / len(rows)
    return out


def choose_threshold(judged: dict) -> dict:
    """The quality threshold: given, or chosen on the out-of-fold scores of audited fit-fold dreams."""
    from dreamgen.errors import ConfigError
    from dreamgen.quality.filter import pick_threshold, verdicts

    config = judged["config"]
    if config.quality_threshold is not None:
        return {"threshold": config.quality_threshold, "mode": "given"}
    oof = judged["quality"].info.get("oof", {})
    index = np.array([i for i, e in enumerate(judged["episode_id"]) if e in oof], np.int64)
    if len(index) == 0:
        raise ConfigError("filter.quality_threshold=auto needs audited dreams of this store in the quality "
                          "model's training data; run `dreamgen audit` then `dreamgen train-quality`, or give "
                          "filter.quality_threshold=<probability>")
    oof_score = np.array([oof[judged["episode_id"][i]][0] for i in index])
    label = np.array([oof[judged["episode_id"][i]][1] for i in index], bool)
    physical_ok = verdicts(judged["physical"][index], judged["dis_max"][index], judged["dis_mean"][index],
                           np.ones(len(index)), judged["bound"], config, 0.0) == "passed"
    picked = pick_threshold(oof_score, label, physical_ok, config.target_precision)
    if not picked["met"]:
        log.warning("filter: no quality threshold reaches precision %.2f on %d audited fit-fold dreams; "
                    "using the most precise one (%.3f, precision %.2f)", config.target_precision, len(index),
                    picked["threshold"], picked["precision"])
    return {**picked, "mode": "auto", "calibration_dreams": int(len(index))}


def run(cfg: DictConfig) -> dict:
    import dataclasses

    from dreamgen.checkpoints import recorded_digest
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.quality.filter import PASSED, REASONS, verdicts

    filter_config(cfg)
    safety(cfg)  # safety.* refused before anything runs
    from dreamgen.errors import ConfigError

    for name in ("reject_unsafe", "reject_risk"):
        if not isinstance(cfg.filter[name], bool):
            raise ConfigError(f"filter.{name}={cfg.filter[name]!r}: must be true or false")
    if cfg.filter.reject_risk:  # refused before the store is touched
        from dreamgen.shield import require_safety_head
        from dreamgen.world_model.checkpoint import load_world_model

        require_safety_head(load_world_model(cfg.filter.world_model), f"filter.reject_risk=true (filter.world_model="
                                                                       f"{cfg.filter.world_model})")
    store = TrajectoryStore.open(cfg.filter.store, mode="r+")
    with run_verb(cfg, "filter", inputs={"dream": store}) as (run_dir, tracker):
        bar = progress(None, cfg, total=len(store), desc="filter", unit="ep")
        judged = judge(cfg, store, on_episode=lambda: bar.update(1))
        bar.close()
        chosen = choose_threshold(judged)
        reason = verdicts(judged["physical"], judged["dis_max"], judged["dis_mean"], judged["score"],
                          judged["bound"], judged["config"], chosen["threshold"])
        accepted = reason == PASSED
        digest = store.digest()
        store.update_meta("quality", judged["score"])
        store.update_meta("reason", reason)
        store.update_meta("verdict", np.where(accepted, *VERDICTS))
        counts = collections.Counter(reason.tolist())
        record = {"thresholds": {**dataclasses.asdict(judged["config"]), "quality_threshold": chosen["threshold"]},
                  "choice": chosen, "quality_model": str(cfg.filter.quality),
                  "quality_model_digest": recorded_digest(cfg.filter.quality, "quality.json"), "world_model_id": judged["world_model_id"],
                  "store_digest": digest, "accepted": int(accepted.sum()), "episodes": len(store),
                  "reasons": dict(counts), "verdict_digest": store.meta_digest(VERDICT_FIELDS),
                  "reject_unsafe": bool(cfg.filter.reject_unsafe), "unsafe_rates": dream_unsafe_rates(judged)}
        if judged["risk_events"]:  # the safety head's view of every dream, rejected or not
            record.update(reject_risk=bool(cfg.filter.reject_risk),
                          predicted_unsafe_rates=dream_unsafe_rates(judged, "predicted", "risk_events"))
        store.set_info("filter", record)  # the commit: verdicts not matching this record are never trained on
        metrics = {"filter/accept_rate": float(accepted.mean()) if len(store) else 0.0,
                   "filter/accepted": float(accepted.sum()), "filter/quality_threshold": float(chosen["threshold"])}
        unsafe_reasons = sorted({*(f"unsafe:{e}" for e in judged["rule_events"] if cfg.filter.reject_unsafe),
                                 *(f"unsafe:{e}" for e in judged["risk_events"] if cfg.filter.reject_risk)})
        metrics.update({f"filter/rate_{r.replace(':', '-')}": counts.get(r, 0) / max(len(store), 1)
                        for r in (*REASONS, *unsafe_reasons, PASSED)})
        metrics.update({f"filter/unsafe/{task}/{event}": rate for task, row in record["unsafe_rates"].items()
                        for event, rate in row.items()})
        metrics.update({f"filter/predicted_unsafe/{task}/{event}": rate
                        for task, row in record.get("predicted_unsafe_rates", {}).items() for event, rate in row.items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(record, "filter.json")
        log.info("filter %s: accepted %d of %d (quality threshold %.3f, %s); reasons: %s", cfg.filter.store,
                 int(accepted.sum()), len(store), chosen["threshold"], chosen["mode"],
                 ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        return {"store": str(cfg.filter.store), **metrics, "reasons": dict(counts), "choice": chosen}


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen train-quality``: the learned quality model on real episodes and audited dreams → run_dir/quality.

Training data: every real episode of ``quality.real_store`` (label: reached success) and the dreams of
``quality.dream_store`` the audit replayed in its ``fit`` fold (label: real replay outcome). Cross-fitting
gives out-of-fold scores (kept in the checkpoint: the filter picks its threshold on them); the final
model is trained on everything. Held-out AUC and calibration go to MLflow: out-of-fold on the training
data, and on the audit's ``test`` fold, which no model or threshold ever trains on.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from jobs.common import hydra_main, log, progress, run_verb


def quality_config(cfg: DictConfig):
    from dreamgen.errors import ConfigError
    from dreamgen.quality.model import QualityConfig

    q = cfg.quality
    if not isinstance(q.folds, int) or q.folds < 2:
        raise ConfigError(f"quality.folds={q.folds!r}; must be an integer >= 2 (cross-fitting folds)")
    return QualityConfig(hidden=q.hidden, layers=q.layers, lr=q.lr, weight_decay=q.weight_decay, epochs=q.epochs,
                         batch_size=q.batch_size, gamma=q.gamma, value_weight=q.value_weight)


def labelled_data(real_store, dream_store, labels: dict) -> dict:
    """``QualityData`` per audit fold in one pass over each store: ``fit`` holds every real episode and
    the dreams audited in the fit fold, ``test`` the dreams audited in the test fold."""
    from dreamgen.language import default_encoder
    from dreamgen.quality.model import QualityData

    columns = ("obs", "action", "text", "label", "step", "source", "id")
    folds: dict[str, dict[str, list]] = {fold: {c: [] for c in columns} for fold in ("fit", "test")}

    def add(fold: str, episode, success: bool, success_step: int, src: str) -> None:
        values = (episode.obs, episode.action, episode.meta["instruction"], success, success_step, src,
                  episode.meta["episode_id"])
        for column, value in zip(columns, values, strict=True):
            folds[fold][column].append(value)

    if real_store is not None:
        for episode in real_store.iter_episodes(images=False):
            hit = bool(episode.success.any())
            add("fit", episode, hit, int(np.argmax(episode.success)) if hit else -1, "real")
    if dream_store is not None and labels:
        for episode in dream_store.iter_episodes(images=False):
            entry = labels.get(episode.meta["episode_id"])
            if entry is not None and entry["fold"] in folds:
                add(entry["fold"], episode, bool(entry["real_success"]), -1, "dream")
    encoder = default_encoder()
    return {fold: QualityData(c["obs"], c["action"],
                              encoder.encode(c["text"]) if c["text"] else np.zeros((0, 384), np.float32),
                              np.array(c["label"], bool), np.array(c["step"], np.int64), np.array(c["source"]),
                              np.array(c["id"]))
            for fold, c in folds.items()}


def run(cfg: DictConfig) -> dict:
    from pathlib import Path

    from dreamgen.data.store import TrajectoryStore
    from dreamgen.quality.audit import load_labels
    from dreamgen.quality.model import auc, calibration, cross_fit, fit_quality
    from dreamgen.rundir import staged

    q = cfg.quality
    config = quality_config(cfg)
    real = TrajectoryStore.open(q.real_store)
    dream = TrajectoryStore.open(q.dream_store) if Path(str(q.dream_store)).exists() else None
    labels = load_labels(Path(str(q.labels)))
    folds = labelled_data(real, dream, labels)
    data, test = folds["fit"], folds["test"]
    inputs = {"real": real, **({"dream": dream} if dream is not None else {})}
    with run_verb(cfg, "train-quality", inputs=inputs) as (run_dir, tracker):
        n_dream = int((data.source == "dream").sum())
        source = real.info.get("success_labels", "the simulator's success signal")
        log.info("quality model: %d real episodes (labels: %s) + %d audited dreams (fit fold); %d cross-fitting folds",
                 len(data) - n_dream, source, n_dream, q.folds)
        oof = cross_fit(data, config, seed=cfg.seed, folds=q.folds)
        bar = progress(range(config.epochs), cfg, desc="train-quality", unit="epoch")

        def on_epoch(epoch: int, loss: float) -> None:
            bar.update(1)
            tracker.log_metrics({"quality/train_loss": loss}, step=epoch)

        info = {"real_digest": real.digest(), "seed": cfg.seed, "real_labels": source,
                "dream_digest": dream.digest() if dream is not None else None}
        model = fit_quality(data, config, seed=cfg.seed, info=info, on_epoch=on_epoch)
        bar.close()
        is_dream = data.source == "dream"
        metrics = {"quality/oof_auc_real": auc(oof[~is_dream], data.label[~is_dream]),
                   "quality/oof_auc_dream": auc(oof[is_dream], data.label[is_dream]),
                   "quality/train_real": float((~is_dream).sum()), "quality/train_dreams": float(is_dream.sum())}
        report = {"oof_real": calibration(oof[~is_dream], data.label[~is_dream]),
                  "oof_dream": calibration(oof[is_dream], data.label[is_dream])}
        if len(test):
            score = model.score(test.obs, test.action, test.cond)[0]
            metrics["quality/test_auc_dream"] = auc(score, test.label)
            report["test_dream"] = calibration(score, test.label)
            metrics["quality/test_ece_dream"] = report["test_dream"]["ece"]
        metrics["quality/oof_ece_dream"] = report["oof_dream"]["ece"]
        # out-of-fold scores of audited dreams: what `dreamgen filter` picks its automatic threshold on
        model.info["oof"] = {str(i): [float(s), bool(lab)] for i, s, lab, d in
                             zip(data.episode_id, oof, data.label, is_dream, strict=True) if d}
        model.info["metrics"] = metrics
        with staged(Path(str(q.out))) as partial:
            model.save(partial)
        tracker.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        tracker.log_dict(report, "quality_calibration.json")
        log.info("quality model -> %s: %s", q.out, ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in metrics.items()))
        return {"quality": str(q.out), **metrics}


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen train-policy``: language-conditioned BC on real demos (+ capped accepted dreams) → run_dir/policy.

With ``policy.dream_store`` set and ``policy.max_dream_fraction > 0``, the accepted dreams of a filtered
dream store are mixed in by ``CappedMixSampler``; the checkpoint's ``info["dream_selection"]`` records
which dreams it consumed (store digest, verdicts, the filter's thresholds) and the achieved fraction.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig

from jobs.common import embodiment, hydra_main, log, progress, run_verb


class Frames(NamedTuple):
    """The kept episodes' frames end to end: ``obs[N,O]``, ``action[N,A]``, one instruction per frame, the
    camera frames (an image policy's; else None) and each episode's length (a chunking policy's windows)."""

    obs: np.ndarray
    action: np.ndarray
    texts: list[str]
    images: np.ndarray | None
    lengths: np.ndarray


def _frames(store: Any, keep: np.ndarray, images: bool = False) -> Frames:
    """The kept episodes' ``Frames``; with ``images``, their camera frames too."""
    obs, action, texts, frames, lengths = [], [], [], [], []
    for index, episode in enumerate(store.iter_episodes(images=images)):
        if keep[index]:
            obs.append(episode.obs)
            action.append(episode.action)
            texts += [episode.meta["instruction"]] * len(episode)
            lengths.append(len(episode))
            if images:
                frames.append(episode.images)
    return Frames(np.concatenate(obs), np.concatenate(action), texts, np.concatenate(frames) if images else None,
                  np.asarray(lengths, dtype=np.int64))


def image_policy(cfg: DictConfig) -> bool:
    """The policy's family sees the cameras (its stores must be image stores)."""
    from policies.families import get

    return get(cfg.policy.family).images


def check_cameras(store: Any, cameras: Any, field: str) -> None:
    """Refuse a store without camera frames (or with other cameras) for an image policy."""
    from dreamgen.errors import ConfigError

    if store.cameras is None:
        raise ConfigError(f"{field}={store.path} holds no camera images, and policy.family=bc-image learns from "
                          "them; collect with camera.names set (an image store) or use policy.family=bc")
    if cameras is not None:
        cameras.check_same(store.cameras, f"{field}={store.path}", "the real store")


def load_demos(cfg: DictConfig, store: Any = None):
    """Frames of the selected demonstrations: obs[N,O], action[N,A], instructions[N], episode count.

    ``store``: ``policy.store`` already open (its digest is then read once per handle).
    """
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError

    store = store or TrajectoryStore.open(cfg.policy.store)
    embodiment(cfg).check_recorded(store.info.get("embodiment"), f"policy.store={cfg.policy.store}")
    meta = store.meta(["kind", "success"])
    keep = np.isin(meta["kind"], list(cfg.policy.train_kinds))
    if cfg.policy.success_only:
        keep &= meta["success"]
    if not keep.any():
        raise ConfigError(f"policy.train_kinds={list(cfg.policy.train_kinds)} (success_only="
                          f"{cfg.policy.success_only}) selects no episode of {cfg.policy.store}; "
                          f"its kinds are {sorted(set(meta['kind']))}")
    if image_policy(cfg):
        check_cameras(store, None, "policy.store")
    frames = _frames(store, keep, images=image_policy(cfg))
    return store, frames, int(keep.sum())


def dream_selection(store: Any, verdicts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Which dreams of a filtered store have one of ``verdicts``: ``(mask, selection record)``.

    The record names the store (digest), the filter's thresholds and a digest of the selected episode
    ids, so a checkpoint says exactly which dreams it consumed. Refuses a store that was never filtered
    or that changed since (its verdicts would not describe its dreams).
    """
    import hashlib

    from dreamgen.errors import ConfigError

    record = store.info.get("filter")
    if record is None:
        raise ConfigError(f"dream store {store.path} has no filter verdicts; run `dreamgen filter` on it first "
                          "(only accepted dreams are mixed in)")
    digest = store.digest()
    if record["store_digest"] != digest:
        raise ConfigError(f"dream store {store.path} changed since it was filtered ({record['episodes']} episodes "
                          f"then, {len(store)} now); rerun `dreamgen filter`")
    from jobs.filter import VERDICT_FIELDS

    if record.get("verdict_digest") != store.meta_digest(VERDICT_FIELDS):
        raise ConfigError(f"dream store {store.path}: its verdicts changed since `dreamgen filter` recorded them "
                          "(edited, or the filter was interrupted); rerun `dreamgen filter` on it")
    meta = store.meta(["verdict", "sampler", "episode_id"])
    keep = np.isin(meta["verdict"], verdicts)
    ids = hashlib.sha256("\n".join(sorted(meta["episode_id"][keep].tolist())).encode()).hexdigest()[:16]
    return keep, {"store_digest": digest, "verdicts": list(verdicts),
                  "episodes": int(keep.sum()), "episode_ids_digest": ids, "frames": 0,
                  "samplers": dict(collections.Counter(meta["sampler"][keep].tolist())),
                  "filter": {k: record.get(k) for k in ("thresholds", "quality_model_digest", "world_model_id", "accepted",
                                                    "episodes")}}


def load_dreams(cfg: DictConfig, store: Any = None) -> tuple[Any, dict[str, Any] | None]:
    """Frames ``(obs, action, texts)`` of the selected dreams and their selection record, or ``(None, None)``.

    ``store``: ``policy.dream_store`` already open.
    """
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError
    from dreamgen.mix import check_fraction

    p = cfg.policy
    fraction = check_fraction(p.max_dream_fraction, "policy.max_dream_fraction")
    if p.control:  # the control arm: the same share of every batch re-drawn from the real frames, no dreams
        return None, {"control": True, "max_dream_fraction": fraction, "episodes": 0, "frames": 0, "samplers": {}}
    if p.dream_store is None:
        if fraction > 0:
            raise ConfigError(f"policy.max_dream_fraction={fraction} but policy.dream_store is null; give a "
                              "filtered dream store (e.g. policy.dream_store=${generate.store}) or set the cap to 0")
        return None, None
    store = store or TrajectoryStore.open(p.dream_store)
    keep, selection = dream_selection(store, list(p.dream_verdicts))
    selection["max_dream_fraction"] = fraction
    if not keep.any():
        log.warning("policy.dream_store=%s has no dream with verdict in %s: training on real data only",
                    p.dream_store, list(p.dream_verdicts))
        return None, selection
    if image_policy(cfg):
        check_cameras(store, TrajectoryStore.open(p.store).cameras, "policy.dream_store")
    frames = _frames(store, keep, images=image_policy(cfg))
    selection["frames"] = len(frames.obs)
    return frames, selection


def check_config(cfg: DictConfig) -> None:
    """Refuse bad ``policy.*`` values before anything is read or trained."""
    from dreamgen.errors import ConfigError
    from dreamgen.mix import check_fraction

    p = cfg.policy
    if p.epochs < 1 or p.batch_size < 1 or p.hidden < 1 or p.layers < 1 or p.lr <= 0:
        raise ConfigError("policy.epochs, batch_size, hidden, layers must be >= 1 and policy.lr > 0; "
                          f"got epochs={p.epochs} batch_size={p.batch_size} hidden={p.hidden} "
                          f"layers={p.layers} lr={p.lr}")
    check_fraction(p.max_dream_fraction, "policy.max_dream_fraction")
    from policies import families

    families.get(p.family, trained=True).check(cfg)
    if not isinstance(p.control, bool):
        raise ConfigError(f"policy.control={p.control!r}; must be true or false")
    if p.control and p.dream_store is not None:
        raise ConfigError("policy.control=true fills the capped share with real frames; it takes no "
                          "policy.dream_store (set it to null)")
    from jobs.filter import check_verdicts

    check_verdicts(list(p.dream_verdicts), "policy.dream_verdicts")


def train(cfg: DictConfig, on_epoch: Callable[[int, float], None] | None = None,
          stores: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the policy that ``cfg.policy`` describes; no tracking, no files. Returns (policy, metrics).

    ``stores``: the ``real`` (and ``dream``) stores already open, so their digests are read once.
    """
    from dreamgen.language import default_encoder
    from policies.bc import BCConfig
    from policies.families import TrainingData, get

    check_config(cfg)
    p = cfg.policy
    seed = cfg.seed if p.seed is None else int(p.seed)
    config = BCConfig(hidden=p.hidden, layers=p.layers, lr=p.lr, weight_decay=p.weight_decay,
                      epochs=p.epochs, batch_size=p.batch_size, action_noise_std=p.action_noise_std)
    stores = stores or {}
    store, real, n_episodes = load_demos(cfg, stores.get("real"))
    obs, action, texts = real.obs, real.action, real.texts
    dream_frames, selection = load_dreams(cfg, stores.get("dream"))
    encoder = default_encoder()
    dream, dream_lengths = None, None
    if dream_frames is not None:
        dream = (dream_frames.obs, dream_frames.action, encoder.encode(dream_frames.texts),
                 *([] if dream_frames.images is None else [dream_frames.images]))
        dream_lengths = dream_frames.lengths
    if p.control:  # the capped share of every batch is filled with real frames drawn again (EVALUATION.md §2)
        dream = (obs, action, encoder.encode(texts), *([] if real.images is None else [real.images]))
        dream_lengths = real.lengths
    info = {"embodiment": embodiment(cfg).name, "store_digest": store.digest(), "episodes": n_episodes,
            "frames": len(obs), "train_kinds": list(p.train_kinds), "seed": seed, "dream_selection": selection}
    family = get(p.family, trained=True)
    assert family.fit is not None
    policy = family.fit(TrainingData(obs, action, encoder.encode(texts), real.images, dream,
                                     float(p.max_dream_fraction), config, seed, info, on_epoch, cfg, embodiment(cfg),
                                     store.cameras, real.lengths, dream_lengths))
    achieved = policy.info["achieved_dream_fraction"]
    if selection is not None:
        selection["achieved_fraction"] = achieved
    metrics = {"policy/episodes": n_episodes, "policy/frames": len(obs),
               "policy/dream_episodes": selection["episodes"] if selection else 0,
               "policy/dream_frames": selection["frames"] if selection else 0,
               "policy/max_dream_fraction": float(p.max_dream_fraction), "policy/achieved_dream_fraction": achieved}
    return policy, metrics


def run(cfg: DictConfig) -> dict:
    from dreamgen.rundir import staged

    check_config(cfg)
    from dreamgen.data.store import TrajectoryStore

    inputs = {"real": TrajectoryStore.open(cfg.policy.store)}
    if cfg.policy.dream_store is not None:
        inputs["dream"] = TrajectoryStore.open(cfg.policy.dream_store)
    from policies.families import get

    epochs = get(cfg.policy.family).epochs(cfg)
    with run_verb(cfg, "train-policy", inputs=inputs) as (run_dir, tracker):
        bar = progress(range(epochs), cfg, desc="train-policy", unit="epoch")
        losses: list[float] = []

        def on_epoch(epoch: int, loss: float) -> None:
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if epoch % max(1, epochs // 50) == 0 or epoch == epochs - 1:
                tracker.log_metrics({"policy/train_mse": loss}, step=epoch)

        policy, metrics = train(cfg, on_epoch, inputs)
        bar.close()
        with staged(run_dir / "policy") as partial:
            policy.save(partial)
        if losses:  # a family that reports no epochs (one that is not fitted by gradient steps) has no loss
            metrics["policy/final_train_mse"] = losses[-1]
        tracker.log_metrics(metrics)
        if policy.info["dream_selection"] is not None:
            tracker.log_dict(policy.info["dream_selection"], "dream_selection.json")
        log.info("trained %s on %d demos (%d frames) + %d accepted dreams (%d frames) at dream fraction %.3f "
                 "(cap %.3f): final mse %.4f -> %s", cfg.policy.family, metrics["policy/episodes"], metrics["policy/frames"],
                 metrics["policy/dream_episodes"], metrics["policy/dream_frames"],
                 metrics["policy/achieved_dream_fraction"], metrics["policy/max_dream_fraction"],
                 losses[-1] if losses else float("nan"),
                 run_dir / "policy")
        return {"policy": str(run_dir / "policy"), **metrics}


main = hydra_main(run)

if __name__ == "__main__":
    main()

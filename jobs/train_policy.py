"""``dreamgen train-policy``: language-conditioned BC on a store's demonstrations → run_dir/policy."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from jobs.common import hydra_main, log, progress, run_verb


def load_demos(cfg: DictConfig):
    """Frames of the selected demonstrations: obs[N,O], action[N,A], instructions[N], episode count."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError

    store = TrajectoryStore.open(cfg.policy.store)
    meta = store.meta(["kind", "success", "instruction"])
    keep = np.isin(meta["kind"], list(cfg.policy.train_kinds))
    if cfg.policy.success_only:
        keep &= meta["success"]
    if not keep.any():
        raise ConfigError(f"policy.train_kinds={list(cfg.policy.train_kinds)} (success_only="
                          f"{cfg.policy.success_only}) selects no episode of {cfg.policy.store}; "
                          f"its kinds are {sorted(set(meta['kind']))}")
    obs, action, texts = [], [], []
    for index, episode in enumerate(store.iter_episodes()):
        if keep[index]:
            obs.append(episode.obs)
            action.append(episode.action)
            texts += [episode.meta["instruction"]] * len(episode)
    return store, np.concatenate(obs), np.concatenate(action), texts, int(keep.sum())


def run(cfg: DictConfig) -> dict:
    from dreamgen.errors import ConfigError
    from dreamgen.language import default_encoder
    from dreamgen.rundir import staged
    from policies.bc import BCConfig, fit_bc

    p = cfg.policy
    if p.epochs < 1 or p.batch_size < 1 or p.hidden < 1 or p.layers < 1 or p.lr <= 0:
        raise ConfigError("policy.epochs, batch_size, hidden, layers must be >= 1 and policy.lr > 0; "
                          f"got epochs={p.epochs} batch_size={p.batch_size} hidden={p.hidden} "
                          f"layers={p.layers} lr={p.lr}")
    config = BCConfig(hidden=p.hidden, layers=p.layers, lr=p.lr, weight_decay=p.weight_decay,
                      epochs=p.epochs, batch_size=p.batch_size, action_noise_std=p.action_noise_std)
    store, obs, action, texts, n_episodes = load_demos(cfg)
    cond = default_encoder().encode(texts)
    with run_verb(cfg, "train-policy", inputs={"real": store}) as (run_dir, tracker):
        bar = progress(range(p.epochs), cfg, desc="train-policy", unit="epoch")
        losses: list[float] = []

        def on_epoch(epoch: int, loss: float) -> None:
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(mse=f"{loss:.4f}")
            if epoch % max(1, p.epochs // 50) == 0 or epoch == p.epochs - 1:
                tracker.log_metrics({"policy/train_mse": loss}, step=epoch)

        info = {"store": str(store.path), "store_digest": store.digest(), "episodes": n_episodes,
                "frames": len(obs), "train_kinds": list(p.train_kinds), "seed": cfg.seed,
                "dream_selection": None}
        policy = fit_bc(obs, action, cond, config, seed=cfg.seed, info=info, on_epoch=on_epoch)
        bar.close()
        with staged(run_dir / "policy") as partial:
            policy.save(partial)
        metrics = {"policy/final_train_mse": losses[-1], "policy/episodes": n_episodes,
                   "policy/frames": len(obs)}
        tracker.log_metrics(metrics)
        log.info("trained BC on %d demos (%d frames): final mse %.4f -> %s", n_episodes, len(obs),
                 losses[-1], run_dir / "policy")
        return {"policy": str(run_dir / "policy"), **metrics}


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen collect``: real demos + play from the embodiment's simulator (or a LeRobot import) into
run_dir/real.zarr, which records the embodiment's name."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from dreamgen.errors import StoreError
from jobs.common import cameras, embodiment, hydra_main, log, progress, run_verb, safety


def collect_spec(cfg: DictConfig):
    from dreamgen.data.collect import CollectSpec

    c = cfg.collect
    robot = embodiment(cfg)
    return CollectSpec(embodiment=robot, cameras=cameras(cfg, robot), safety=safety(cfg, robot), tasks=tuple(cfg.tasks), n_expert=c.n_expert, n_play=c.n_play,
                       n_risky=c.n_risky,
                       expert_noise=c.expert_noise, play_noise=c.play_noise,
                       play_random_prob=c.play_random_prob, play_steps=c.play_steps,
                       post_success_steps=c.post_success_steps, max_steps=c.max_steps)


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.collect import collect_real
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.rundir import staged

    spec = collect_spec(cfg)  # validates before anything starts
    robot = spec.embodiment
    tasks = robot.check_tasks(cfg.tasks)
    imported, imported_cameras, imported_safety, info = None, None, None, {"collected_by": "dreamgen collect", "seed": cfg.seed, "embodiment": robot.name}
    if robot.spec() is not None:  # a robot described by its data: written down for every later verb
        info["embodiment_spec"] = robot.spec()
    if cfg.collect.import_root:
        from dreamgen.data.lerobot_io import import_lerobot
        from dreamgen.language import make_resolver

        resolver = make_resolver(robot.tasks, min_similarity=cfg.language.min_similarity,
                                 ambiguity_margin=cfg.language.ambiguity_margin)
        imported, info["success_labels"], imported_cameras, imported_safety = import_lerobot(cfg.collect.import_root, repo_id=cfg.collect.import_repo_id,
                                  obs_key=cfg.collect.import_obs_key, obs_dim=robot.obs_dim,
                                  action_dim=robot.action_dim, robot=robot.name, resolve_task=lambda t: resolver.resolve(t).task)
        if not imported:
            raise StoreError(f"{cfg.collect.import_root}: the LeRobotDataset holds no episodes")
        other = sorted({str(e.meta["task"]) for e in imported} - set(tasks))
        if other:
            raise StoreError(f"{cfg.collect.import_root}: its task texts resolve to {other}, which are not in "
                             f"tasks={list(cfg.tasks)}; add them to tasks or import a dataset of these tasks")
    with run_verb(cfg, "collect") as (run_dir, tracker):
        final = run_dir / "real.zarr"
        if final.exists():
            store = TrajectoryStore.open(final)
            log.info("%s already holds %d episodes of this run; nothing to collect", final, len(store))
            return {"store": str(final), "episodes": len(store)}
        start = time.perf_counter()
        with staged(final) as partial:
            if spec.cameras is not None and imported is not None:
                raise StoreError(f"{cfg.collect.import_root}: camera.names={list(spec.cameras.names)} renders the "
                                 "simulator; an imported dataset brings its own frames — leave camera.names empty")
            labels = (spec.safety.describe() if spec.safety is not None else None) if imported is None else imported_safety
            store = TrajectoryStore.create(partial, obs_dim=robot.obs_dim, action_dim=robot.action_dim, info=info,
                                           cameras=spec.cameras if imported is None else imported_cameras,
                                           safety=labels)
            episodes = imported if imported is not None else collect_real(spec, cfg.seed)
            total = len(imported) if imported is not None else spec.n_episodes
            batch = []
            for episode in progress(episodes, cfg, total=total, desc="collect", unit="ep"):
                batch.append(episode)
                if len(batch) >= 16:
                    store.append(batch)
                    batch = []
            store.append(batch)
        store = TrajectoryStore.open(final)
        elapsed = time.perf_counter() - start
        meta = store.meta(["kind", "success"])
        metrics = {"collect/episodes": len(store), "collect/frames": store.n_frames,
                   "collect/episodes_per_s": len(store) / elapsed,
                   "collect/frames_per_s": store.n_frames / elapsed}
        if spec.cameras is not None:  # rendering dominates: say what the images cost
            log.info("rendered %d frames of cameras %s: %.1f frames/s including simulation", store.n_frames,
                     spec.cameras.describe(), store.n_frames / elapsed)
        for kind in sorted(set(meta["kind"])):
            mask = meta["kind"] == kind
            metrics[f"collect/{kind}_success_rate"] = float(meta["success"][mask].mean())
        if store.events:  # the share of frames raising each safety event, per task and kind of episode
            from dreamgen.safety import unsafe_rates

            for (task, kind), row in unsafe_rates(store).items():
                for event, rate in row.items():
                    metrics[f"collect/unsafe/{task}/{kind}/{event}"] = rate
        tracker.log_metrics(metrics)
        tracker.log_dataset(final, name="real", digest=store.digest(), context="collected")
        log.info("collected %d episodes (%d frames) into %s in %.1fs: %s", len(store), store.n_frames,
                 final, elapsed, {k: round(v, 3) for k, v in metrics.items()})
        return {"store": str(final), **metrics}


main = hydra_main(run)

if __name__ == "__main__":
    main()

"""``dreamgen export``: a store (or a selection of it) as a LeRobotDataset v3 at ``export.root``."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from jobs.common import embodiment, hydra_main, log, progress, run_verb


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.lerobot_io import export_lerobot
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError, StoreError

    x, robot = cfg.export, embodiment(cfg)
    store = TrajectoryStore.open(x.store)
    robot.check_recorded(store.info.get("embodiment"), f"export.store={x.store}")
    meta = store.meta(["source", "kind", "task", "verdict"])
    keep = np.ones(len(store), dtype=bool)
    for field, column in (("sources", "source"), ("kinds", "kind"), ("tasks", "task"), ("verdicts", "verdict")):
        wanted = list(x[field])
        if wanted:
            keep &= np.isin(meta[column], wanted)
    if not keep.any():
        raise ConfigError(f"export selection (sources={list(x.sources)} kinds={list(x.kinds)} "
                          f"tasks={list(x.tasks)} verdicts={list(x.verdicts)}) matches no episode of {x.store}")
    from pathlib import Path

    if Path(x.root).exists():
        raise StoreError(f"export.root {x.root} already exists; choose a new export root")
    with run_verb(cfg, "export", inputs={"exported": store}) as (_, tracker):
        selected = (ep for i, ep in enumerate(store.iter_episodes()) if keep[i])
        count = export_lerobot(progress(selected, cfg, total=int(keep.sum()), desc="export", unit="ep"),
                               x.root, repo_id=x.repo_id, obs_dim=store.obs_dim, action_dim=store.action_dim,
                               fps=robot.fps, robot_type=robot.robot_type, cameras=store.cameras)
        tracker.log_metrics({"export/episodes": count})
        log.info("exported %d episodes as LeRobotDataset %s at %s", count, x.repo_id, x.root)
        return {"root": str(x.root), "episodes": count}


main = hydra_main(run)

if __name__ == "__main__":
    main()

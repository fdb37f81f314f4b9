"""``dreamgen export``: a store (or a selection of it) as a LeRobotDataset v3 at ``export.root``.

With ``export.dream_store`` (a filtered dream store), its dreams with a verdict in ``export.dream_verdicts``
follow the selected episodes in the same dataset — real demos + accepted dreams as one LeRobotDataset, each
frame's ``source`` and ``provenance`` saying which is which — for lerobot's own trainer. With
``export.state_part`` (a part of the embodiment, e.g. ``hand``), the state is written as
``observation.state`` (that part) and ``observation.environment_state`` (the rest), the inputs lerobot's
state-only Diffusion Policy and ACT need.
"""

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
    split = None
    if x.get("state_part") is not None:
        from policies.diffusion import state_split

        split = state_split(robot, str(x.state_part), store.obs_dim, field="export.state_part")
    inputs, dreams, dream_keep = {"exported": store}, None, None
    if x.get("dream_store") is not None:
        from jobs.train_policy import dream_selection

        dreams = TrajectoryStore.open(x.dream_store)
        robot.check_recorded(dreams.info.get("embodiment"), f"export.dream_store={x.dream_store}")
        if (dreams.obs_dim, dreams.action_dim) != (store.obs_dim, store.action_dim) or \
                (dreams.cameras is None) != (store.cameras is None):
            raise ConfigError(f"export.dream_store={x.dream_store} holds {dreams.obs_dim}-dim states and "
                              f"{dreams.action_dim}-dim actions{' with' if dreams.cameras else ' without'} cameras, "
                              f"export.store={x.store} {store.obs_dim} and {store.action_dim}"
                              f"{' with' if store.cameras else ' without'}; one dataset needs one feature set")
        if store.cameras is not None:
            store.cameras.check_same(dreams.cameras, f"export.dream_store={x.dream_store}", "export.store")
        from jobs.filter import check_verdicts

        check_verdicts(list(x.dream_verdicts), "export.dream_verdicts")
        dream_keep, _ = dream_selection(dreams, list(x.dream_verdicts))
        if not dream_keep.any():
            raise ConfigError(f"export.dream_store={x.dream_store} has no dream with a verdict in "
                              f"export.dream_verdicts={list(x.dream_verdicts)}; its verdicts: "
                              f"{sorted(set(dreams.meta(['verdict'])['verdict']))}")
        inputs["dreams"] = dreams
    n_dreams = int(dream_keep.sum()) if dream_keep is not None else 0
    with run_verb(cfg, "export", inputs=inputs) as (_, tracker):
        def selected():
            yield from (ep for i, ep in enumerate(store.iter_episodes()) if keep[i])
            if dreams is not None:
                yield from (ep for i, ep in enumerate(dreams.iter_episodes()) if dream_keep[i])

        count = export_lerobot(progress(selected(), cfg, total=int(keep.sum()) + n_dreams, desc="export", unit="ep"),
                               x.root, repo_id=x.repo_id, obs_dim=store.obs_dim, action_dim=store.action_dim,
                               fps=robot.fps, robot_type=robot.robot_type, cameras=store.cameras, split=split,
                               events=store.events)
        tracker.log_metrics({"export/episodes": count, "export/dream_episodes": n_dreams})
        log.info("exported %d episodes (%d dreams) as LeRobotDataset %s at %s", count, n_dreams, x.repo_id, x.root)
        return {"root": str(x.root), "episodes": count, "dream_episodes": n_dreams}


main = hydra_main(run)

if __name__ == "__main__":
    main()

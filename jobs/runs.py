"""``dreamgen runs``: list the MLflow runs of ``tracking.experiment`` (name, status, key metrics)."""

from __future__ import annotations

from omegaconf import DictConfig

from jobs.common import hydra_main


def run(cfg: DictConfig) -> list[dict]:
    from dreamgen.tracking import check_uri, list_runs

    check_uri(cfg.tracking.uri)
    runs = list_runs(cfg.tracking.uri, cfg.tracking.experiment)
    print(f"{len(runs)} runs in experiment {cfg.tracking.experiment!r} at {cfg.tracking.uri}")
    for r in runs:
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted(r["metrics"].items())[:4])
        print(f"  {r['run_id'][:8]}  {r['status']:9s} {r['run_name']:28s} {metrics}")
    return runs


main = hydra_main(run)

if __name__ == "__main__":
    main()

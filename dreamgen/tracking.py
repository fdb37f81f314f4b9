"""Tracker: MLflow behind one module (the only ``import mlflow`` in the library).

A run records params (the flattened resolved config), metrics named ``<stage>/<metric>``, the resolved
config as ``config.yaml``, and dataset lineage through ``mlflow.log_input`` (path, name, digest).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists become their string form)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Tracker:
    """One MLflow run. Use ``start_run`` rather than constructing it directly."""

    def __init__(self, run: Any):
        import mlflow

        self._mlflow = mlflow
        self.run_id: str = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._mlflow.log_params(dict(items[start:start + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, step=step)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self._mlflow.log_dict(dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: str | Path) -> None:
        self._mlflow.log_artifact(str(path))

    def log_dataset(self, path: str | Path, *, name: str, digest: str, context: str) -> None:
        """Dataset lineage: which store (path + content digest) the run read or wrote."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source=source, name=name, digest=digest)  # type: ignore[abstract]
        self._mlflow.log_input(dataset, context=context)


@contextmanager
def start_run(tracking_uri: str, experiment: str, run_name: str, *, config_yaml: str,
              params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
    """Start an MLflow run, log the resolved config and params; end it FINISHED or FAILED."""
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    nested = mlflow.active_run() is not None  # a stage inside `dreamgen pipeline` is a child run
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {}), nested=nested) as run:
        tracker = Tracker(run)
        tracker.log_text(config_yaml, "config.yaml")
        tracker.log_params(params)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, tracking_uri)
        yield tracker


def list_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of ``experiment`` as a dict (run_id, run_name, status, params, metrics)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=10000)
    return [
        {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
         "params": dict(r.data.params), "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)}
        for r in runs
    ]

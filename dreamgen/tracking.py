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

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), folder)

    def log_dataset(self, path: str | Path, *, name: str, digest: str, context: str) -> None:
        """Dataset lineage: which store (path + content digest) the run read or wrote."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source=source, name=name, digest=digest)  # type: ignore[abstract]
        self._mlflow.log_input(dataset, context=context)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow's model-training view, not GenAI's


def check_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Refuse, within ``timeout_s``, a tracking URI that is malformed, unwritable or where nothing answers
    (MLflow itself would retry for minutes, then print a traceback)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from dreamgen.errors import ConfigError

    uri = str(uri)
    parsed = urllib.parse.urlparse(uri)
    hint = "give sqlite:///<file>.db (the default, sqlite:///mlflow.db) or http(s)://<host>:<port> of an MLflow server"
    if parsed.scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(f"tracking.uri={uri!r}: a sqlite URI names a file, sqlite:///<path>; {hint}")
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking.uri={uri!r}: folder {folder} does not exist or is not writable; {hint}")
    elif parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(f"tracking.uri={uri!r}: no host; {hint}")
        request = urllib.request.Request(uri.rstrip("/") + "/health", headers=_auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):  # not an answer from MLflow: it would refuse every logged metric the same way
                given = "were refused" if _auth_headers() else "are not set"
                raise ConfigError(f"tracking.uri={uri!r}: the server answered {exc.code} {exc.reason} on /health; "
                                  f"its credentials (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or "
                                  f"MLFLOW_TRACKING_TOKEN) {given}; set them, or {hint}") from exc
            raise ConfigError(f"tracking.uri={uri!r}: the server answered {exc.code} {exc.reason} on /health; "
                              f"is it an MLflow server? {hint}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"tracking.uri={uri!r}: nothing answers there within {timeout_s:g} s ({reason}); "
                              f"start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`) or {hint}") from exc
    elif parsed.scheme == "" and uri:
        db = f"sqlite:///{uri}" if uri.endswith((".db", ".sqlite")) else f"file://{Path(uri).expanduser().absolute()}"
        raise ConfigError(f"tracking.uri={uri!r} is a bare path, which MLflow cannot open as a database; give "
                          f"{db} or {hint}")
    elif parsed.scheme != "file":
        raise ConfigError(f"tracking.uri={uri!r}: scheme {parsed.scheme!r} is not supported; {hint}")


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send (basic auth or a bearer token), as request headers."""
    import base64

    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


@contextmanager
def start_run(tracking_uri: str, experiment: str, run_name: str, *, config_yaml: str,
              params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
    """Start an MLflow run, log the resolved config and params; end it FINISHED or FAILED."""
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    import mlflow

    quiet()
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.set_experiment(experiment)
    if EXPERIMENT_KIND[0] not in exp.tags:
        mlflow.MlflowClient(tracking_uri=tracking_uri).set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    nested = mlflow.active_run() is not None  # a stage inside `dreamgen pipeline` is a child run
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {}), nested=nested) as run:
        tracker = Tracker(run)
        tracker.log_text(config_yaml, "config.yaml")
        tracker.log_params(params)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, tracking_uri)
        yield tracker


def quiet() -> None:
    """MLflow's and its database migrations' INFO lines off stderr (a user's error stays one line there)."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def list_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of ``experiment`` as a dict (run_id, run_name, status, params, metrics)."""
    import mlflow

    quiet()
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

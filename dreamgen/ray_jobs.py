"""Ray Jobs: ``dreamgen submit <verb> [overrides]`` and ``dreamgen jobs status|logs|stop ID``.

A verb is submitted as ``python -m jobs.<verb> <overrides>`` with this checkout as the job's
``working_dir``. The config is composed here first, so a bad override fails before anything is
submitted, and relative ``run_dir``/sqlite paths are made absolute (the job runs in a temporary copy
of the working dir; its outputs must land where you can see them — on a remote cluster, on storage
the cluster mounts).

Address: ``--address`` or ``RAY_API_SERVER_ADDRESS``/``RAY_ADDRESS`` (the dashboard URL, e.g.
``http://127.0.0.1:8265``). Ray 2.60 clusters use token auth; a token in ``~/.ray/auth_token`` or
``RAY_AUTH_TOKEN`` is picked up.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = [".git", "runs", "mlruns", "mlflow.db", "*.zarr", "*.egg-info", ".venv", "__pycache__",
            ".pytest_cache", ".mypy_cache", ".ruff_cache"]
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}


def address_of(arg: str | None) -> str:
    address = arg or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    return address if "://" in address else f"http://{address}"


def client(address: str) -> Any:
    from dreamgen.errors import ConfigError

    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"  # read when ray is imported
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection refused, auth, version: one clear line
        raise ConfigError(f"cannot reach the Ray Jobs API at {address} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); start a cluster with `ray start "
                          "--head` or pass --address / RAY_ADDRESS=http://<head>:8265") from None


def absolute_overrides(verb: str, overrides: list[str]) -> list[str]:
    """Compose the verb's config (validating the overrides) and pin run_dir and a sqlite URI absolute."""
    from hydra import compose, initialize_config_dir

    from dreamgen.errors import ConfigError

    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as exc:  # hydra's override/composition errors
        raise ConfigError(f"dreamgen submit {verb}: bad overrides {overrides}: {exc}") from None
    uri = str(cfg.tracking.uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    keep = [o for o in overrides if not o.startswith(("run_dir=", "tracking.uri="))]
    return [*keep, f"run_dir={Path(str(cfg.run_dir)).resolve()}", f"tracking.uri={uri}"]


def submit(verb: str, overrides: list[str], *, address: str, wait: bool, poll_s: float = 2.0) -> tuple[str, str]:
    """Submit ``verb`` as a Ray Job; with ``wait``, stream its logs until it ends. Returns (id, status)."""
    from dreamgen.errors import ConfigError
    from dreamgen.verbs import CLUSTER_VERBS, VERBS, module_of

    if verb not in VERBS or verb in CLUSTER_VERBS:
        raise ConfigError(f"dreamgen submit: unknown verb {verb!r}; accepted: "
                          f"{', '.join(v for v in VERBS if v not in CLUSTER_VERBS)}")
    args = absolute_overrides(verb, overrides)
    entrypoint = " ".join(["python", "-m", module_of(verb), *map(shlex.quote, args)])
    jobs = client(address)
    job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env={
        "working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": JOB_ENV})
    print(f"submitted {job_id} to {address}: {entrypoint}", file=sys.stderr)
    if not wait:
        return job_id, str(jobs.get_job_status(job_id))
    shown = 0
    while True:
        status = jobs.get_job_status(job_id)
        logs = jobs.get_job_logs(job_id)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status.is_terminal():
            print(f"job {job_id}: {status}", file=sys.stderr)
            return job_id, str(status)
        time.sleep(poll_s)


def main_submit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dreamgen submit", description="Submit a verb as a Ray Job.")
    parser.add_argument("--address", help=f"Ray Jobs API (dashboard) URL; default RAY_ADDRESS or {DEFAULT_ADDRESS}")
    parser.add_argument("--no-wait", action="store_true", help="return after submitting (print the job id)")
    parser.add_argument("verb")
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    job_id, status = submit(args.verb, args.overrides, address=address_of(args.address), wait=not args.no_wait)
    print(job_id)
    return 0 if args.no_wait or status == "SUCCEEDED" else 1


def main_jobs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dreamgen jobs", description="Inspect or stop a submitted Ray Job.")
    parser.add_argument("action", choices=["status", "logs", "stop", "list"])
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--address")
    args = parser.parse_args(argv)
    if args.action != "list" and not args.job_id:
        parser.error(f"jobs {args.action} needs a job id")
    from dreamgen.errors import ConfigError

    jobs = client(address_of(args.address))
    try:
        if args.action == "list":
            for job in jobs.list_jobs():
                print(f"{job.submission_id}\t{job.status}\t{job.entrypoint}")
        elif args.action == "status":
            print(jobs.get_job_status(args.job_id))
        elif args.action == "logs":
            sys.stdout.write(jobs.get_job_logs(args.job_id))
        else:
            print("stopped" if jobs.stop_job(args.job_id) else "not running")
    except RuntimeError as exc:  # the Jobs API answers an unknown id with a RuntimeError
        raise ConfigError(f"dreamgen jobs {args.action} {args.job_id}: {str(exc).splitlines()[0]}") from None
    return 0

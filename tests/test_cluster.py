"""A real Ray head (``ray start --head`` on 127.0.0.1, its own process group, stopped by id — never
``ray stop``), a ``smoke`` generation submitted through ``dreamgen submit``, and ``dreamgen jobs``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamgen.data.store import TrajectoryStore
from tests.conftest import dreamgen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    ray_bin = Path(sys.executable).with_name("ray")
    gcs, dashboard = free_port(), free_port()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    # the head runs jobs with the `python` on its PATH: start it from the venv, as a user would
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
             "--disable-usage-stats"], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", dashboard)) == 0:
                    break
            time.sleep(1)
        else:
            raise RuntimeError(f"the Ray dashboard did not come up:\n{log.read_text()[-3000:]}")
        yield address
    finally:  # this head's own process group only
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.integration
def test_a_smoke_generation_submitted_as_a_ray_job_succeeds_and_writes_the_store(smoke_run, ray_head, tmp_path):
    store_path = tmp_path / "submitted.zarr"
    out = dreamgen("submit", "--address", ray_head, "generate", *smoke_run["common"],
                   f"generate.store={store_path}", cwd=smoke_run["work"])
    job_id = out.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_") and "SUCCEEDED" in out.stderr
    store = TrajectoryStore.open(store_path)
    meta = store.meta()
    assert len(store) == 2 * 8 and (meta["source"] == "dream").all() and (meta["job_id"] != "").all()
    assert len(set(meta["episode_id"])) == len(store)
    status = dreamgen("jobs", "status", job_id, "--address", ray_head, cwd=smoke_run["work"])
    assert status.stdout.strip() == "SUCCEEDED"
    logs = dreamgen("jobs", "logs", job_id, "--address", ray_head, cwd=smoke_run["work"])
    assert "dream store" in logs.stdout and job_id in dreamgen("jobs", "list", "--address", ray_head,
                                                               cwd=smoke_run["work"]).stdout


@pytest.mark.integration
def test_submit_refuses_bad_overrides_and_unknown_jobs_before_touching_the_cluster(smoke_run, ray_head):
    bad = dreamgen("submit", "--address", ray_head, "generate", "experiment=nope", cwd=smoke_run["work"], check=False)
    assert bad.returncode == 2 and "bad overrides" in bad.stderr and "nope" in bad.stderr
    verb = dreamgen("submit", "--address", ray_head, "fly", cwd=smoke_run["work"], check=False)
    assert verb.returncode == 2 and "unknown verb 'fly'" in verb.stderr
    missing = dreamgen("jobs", "status", "raysubmit_nope", "--address", ray_head, cwd=smoke_run["work"], check=False)
    assert missing.returncode == 2 and "raysubmit_nope" in missing.stderr
    down = dreamgen("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}", cwd=smoke_run["work"],
                    check=False)
    assert down.returncode == 2 and "cannot reach the Ray Jobs API" in down.stderr


DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from generation.service import connect_ray
connect_ray(None)
print("ready", flush=True)
import time
time.sleep(600)
"""


def test_a_killed_local_driver_leaves_no_ray_process_behind(tmp_path):
    """SIGKILL the process that started a local Ray cluster (as the OOM killer would): within seconds none of
    the processes it started is alive (Ray alone leaves its agents running for a minute or more)."""
    import psutil

    from tests.conftest import REPO

    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(repo=str(REPO))], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # the reaper has polled the cluster's processes at least twice
        started = [p for p in psutil.Process(proc.pid).children(recursive=True)]
        names = " ".join(p.name() for p in started)
        assert "raylet" in names and "gcs_server" in names, names
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        alive = started
        while alive and time.monotonic() < deadline:
            alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.5)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        proc.kill()

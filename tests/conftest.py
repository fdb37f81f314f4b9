"""Shared fixtures: tiny synthetic episodes, and one real `smoke` run shared by the CLI tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamgen.types import Episode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--file-order", default=None, metavar="SEED",
                     help="run the test files in an order shuffled by SEED ('random': a new seed, printed); the "
                          "tests inside a file keep their order. `make test` passes random.")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """``--file-order``: a test that passes only after another file ran is a defect; this finds it, and the
    printed seed repeats the order."""
    import random

    seed = config.getoption("file_order")
    if not seed:
        return
    if seed == "random":
        seed = str(random.SystemRandom().randrange(1_000_000))
    files: dict[str, list[Any]] = {}
    for item in items:
        files.setdefault(str(item.path), []).append(item)
    order = sorted(files)
    random.Random(int(seed)).shuffle(order)
    items[:] = [item for name in order for item in files[name]]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"test files in shuffled order (repeat with --file-order={seed}): "
                            + " ".join(Path(name).stem.removeprefix("test_") for name in order))


def make_episode(rng: np.random.Generator, length: int, index: int, obs_dim: int = 39) -> Episode:
    return Episode(
        obs=rng.normal(size=(length, obs_dim)).astype(np.float32),
        action=rng.uniform(-1, 1, (length, 4)).astype(np.float32),
        reward=rng.normal(size=length).astype(np.float32),
        success=rng.random(length) < 0.2,
        done=np.zeros(length, dtype=bool),
        meta={"episode_id": f"ep-{index:04d}", "task": "drawer-open-v3", "kind": "expert",
              "instruction": "open the drawer", "seed": index},
    )


def dreamgen(*args: str, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as a user would)."""
    cmd = [sys.executable, "-m", "dreamgen.cli", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}\n"
                             f"stdout:\n{result.stdout[-2000:]}")
    return result


def in_process(verb: str, overrides: list[str], capsys: Any = None) -> tuple[int, str]:
    """``dreamgen <verb> <overrides>`` in this process, through the entrypoint the CLI wraps every verb in
    (no interpreter start-up): ``(exit code, stderr)``; stderr needs pytest's ``capsys``."""
    import importlib

    from hydra import compose, initialize_config_dir

    from dreamgen.verbs import module_of
    from jobs.common import entrypoint

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    code = 0
    try:
        entrypoint(importlib.import_module(module_of(verb)).run)(cfg)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err if capsys else ""


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> dict:
    """collect → train-policy → evaluate → export → train-world-model on the `smoke` preset, once per test session
    (evaluate through the CLI, the rest in this process)."""
    work = tmp_path_factory.mktemp("smoke")
    run_dir = work / "run"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    common = ["experiment=smoke", f"run_dir={run_dir}", f"tracking.uri={uri}", "progress=false"]
    outputs: dict[str, Any] = {}
    for verb in ("collect", "train-policy", "evaluate", "export", "train-world-model"):
        if verb == "evaluate":  # through the CLI as a user types it (its table is checked on stdout)
            outputs[verb] = dreamgen(verb, *common, cwd=work)
        else:  # the same entrypoint in this process (no interpreter start-up), in the same working directory
            with contextlib.chdir(work):
                code, _ = in_process(verb, common)
            assert code == 0, f"smoke fixture: {verb} exited {code}"
    return {"work": work, "run_dir": run_dir, "uri": uri, "common": common, "outputs": outputs}

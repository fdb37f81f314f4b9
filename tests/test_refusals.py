"""One sentence for every user mistake: a table of bad inputs, each refused with exit code 2, one line on
stderr naming the field or file and what is accepted, no traceback, and the run directory as it was.

Most rows run a verb in this process (the same ``entrypoint`` the CLI wraps every verb in, on the config
Hydra composes from the same overrides); a few go through the real CLI as a user would type them.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import REPO, dreamgen, in_process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _snapshot(path: Path) -> dict[str, int] | None:
    """Every file under ``path`` with its size and mtime (None: the path does not exist)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def damaged(smoke_run, tmp_path_factory) -> dict[str, Path]:
    """Copies of the smoke run's store and checkpoints, each damaged the way a user or a disk would."""
    import torch
    from safetensors.torch import save_file

    run_dir, root = smoke_run["run_dir"], tmp_path_factory.mktemp("damaged")
    out: dict[str, Path] = {}
    for name in ("flipped", "deleted"):
        shutil.copytree(run_dir / "real.zarr", root / f"{name}.zarr")
    chunk = root / "flipped.zarr" / "data" / "obs" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (root / "deleted.zarr" / "data" / "reward" / "c" / "0").unlink()
    out["flipped_store"], out["deleted_store"] = root / "flipped.zarr", root / "deleted.zarr"

    edited = root / "edited_policy"
    shutil.copytree(run_dir / "policy", edited)
    spec = json.loads((edited / "policy.json").read_text())
    spec["obs_std"] = [s * 2 for s in spec["obs_std"]]
    (edited / "policy.json").write_text(json.dumps(spec))
    out["edited_policy"] = edited
    not_json = root / "not_json_policy"
    shutil.copytree(run_dir / "policy", not_json)
    (not_json / "policy.json").write_text('{"kind": "bc", ')
    out["not_json_policy"] = not_json
    wm = root / "edited_wm"
    shutil.copytree(run_dir / "world_model", wm)
    meta = json.loads((wm / "world_model.json").read_text())
    (wm / "world_model.json").write_text(json.dumps({**meta, "disagreement_bound": 1e9}))
    out["edited_world_model"] = wm
    quality = root / "quality"  # a quality model written by hand: no content checksum
    quality.mkdir()
    save_file({"w": torch.zeros(1)}, str(quality / "model.safetensors"))
    (quality / "quality.json").write_text(json.dumps({"config": {}, "info": {}}))
    out["unchecked_quality"] = quality
    other = root / "other.zarr"  # a store collected for another robot
    shutil.copytree(run_dir / "real.zarr", other)
    import zarr

    group = zarr.open_group(str(other), mode="r+")
    group.attrs["info"] = {**group.attrs["info"], "embodiment": "fetch"}
    out["other_store"] = other
    from dreamgen.world_model.checkpoint import load_world_model, save_world_model

    model = load_world_model(run_dir / "world_model")  # a world model trained for another robot, correctly saved
    model.info["embodiment"] = "fetch"
    save_world_model(model, root / "other_wm")
    out["other_world_model"] = root / "other_wm"
    from policies import load_policy

    policy = load_policy(run_dir / "policy")  # a policy trained for another robot, correctly saved
    policy.info["embodiment"] = "fetch"
    policy.save(root / "other_policy")
    out["other_policy"] = root / "other_policy"
    (root / "labels.json").write_text("{not json")
    out["corrupt_labels"] = root / "labels.json"
    (root / "a_file").write_text("not a directory")
    out["a_file"] = root / "a_file"
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    out["foreign"] = foreign
    return out


# (verb, overrides, what the one line must say); "{x}" is filled from the `damaged` fixture or the smoke run
CASES = [
    # a string, float or bool where a number or a count belongs; negative counts and seeds
    ("collect", ["collect.n_expert=abc"], "collect.n_expert='abc': must be an integer"),
    ("collect", ["collect.n_expert=2.5"], "collect.n_expert=2.5: must be an integer"),
    ("collect", ["collect.n_play=-1"], "collect.n_play=-1: must be an integer >= 0"),
    ("collect", ["seed=-1"], "seed=-1: must be an integer >= 0"),
    ("collect", ["seed=one"], "seed='one': must be an integer"),
    ("train-policy", ["policy.seed=-3"], "policy.seed=-3: must be an integer >= 0 or null"),
    ("train-policy", ["policy.lr=fast"], "policy.lr='fast': must be a number"),
    ("train-policy", ["policy.epochs=true"], "policy.epochs=True: must be an integer"),
    ("train-world-model", ["world_model.members=7.5"], "world_model.members=7.5: must be an integer"),
    ("generate", ["dream.halt=3"], "dream.halt=3: must be true or false"),
    ("generate", ["generate.episodes=2.5"], "generate.episodes=2.5: must be an integer"),
    ("sweep", ["sweep.caps=[0,x]"], "sweep.caps[1]='x': must be a number"),
    ("sweep", ["sweep.seeds=[0,1.5]"], "sweep.seeds[1]=1.5: must be an integer"),
    ("collect", ["tasks=reach-v3"], "tasks='reach-v3': must be a list"),
    ("filter", ["filter.quality_threshold=high"], "filter.quality_threshold='high': must be a probability"),
    ("generate", ["planner=5"], "planner=5: is a section"),
    ("evaluate", ["evaluate.n_episodes=many"], "evaluate.n_episodes='many': must be an integer"),
    # safety.*: an event the robot does not define, a threshold out of range, a word where a list belongs
    ("collect", ["safety.events=[explode]"], "safety.events: embodiment metaworld does not define 'explode'"),
    ("collect", ["safety.table_force_n=-1"], "safety.table_force_n=-1.0 must be > 0"),
    ("evaluate", ["safety.events=strike"], "safety.events='strike': must be all or a list of the robot's safety events"),
    # the shield: a world model without a safety head, a dream evaluation, a threshold that is no probability
    ("evaluate", ["evaluate.shield.enabled=true", "evaluate.shield.world_model={smoke}/world_model",
                  "evaluate.policy={smoke}/policy", "evaluate.store={smoke}/real.zarr"], "has no safety head"),
    ("evaluate", ["evaluate.shield.enabled=true", "evaluate.where=dream"], "nothing real is at risk"),
    ("filter", ["filter.reject_risk=true", "filter.world_model={smoke}/world_model"], "has no safety head"),
    ("evaluate", ["evaluate.shield.enabled=true", "evaluate.shield.world_model={missing}",
                  "evaluate.policy={smoke}/policy", "evaluate.store={smoke}/real.zarr"],
     "holds no world model (world_model.json)"),
    ("train-world-model", ["world_model.safety_head.horizon=0", "world_model.store={smoke}/real.zarr"],
     "world_model.safety_head: horizon=0 must be an integer >= 1"),
    # values of the right type out of range
    ("collect", ["collect.expert_noise=-1"], "collect.expert_noise=-1"),
    ("train-world-model", ["world_model.elites=9"], "world_model.elites=9"),
    ("train-world-model", ["world_model.contact_gate=lid"], "world_model.contact_gate='lid'; embodiment metaworld's "
                                                            "parts that it predicts: hand, object (or auto, or null: no gate)"),
    ("train-world-model", ["world_model.contact_gate=3"], "world_model.contact_gate=3: must be a part of the robot"),
    ("train-world-model", ["world_model.gate_mm=0"], "world_model.gate_mm=0; give a positive number"),
    ("generate", ["generate.sampler.kind=planner", "planner.horizon=0"], "planner.horizon=0"),
    ("generate", ["generate.sampler.kind=planner", "planner.temperature=0"], "planner.temperature=0"),
    ("generate", ["generate.sampler.kind=magic"], "generate.sampler.kind='magic'"),
    ("train-policy", ["policy.max_dream_fraction=1.5"], "policy.max_dream_fraction=1.5"),
    ("train-policy", ["policy.family=mpc"], "policy.family=mpc"),
    ("train-policy", ["policy.dream_verdicts=[accept,low-quality]"], "'low-quality' is not a filter verdict"),
    ("filter", ["filter.target_precision=0"], "filter.target_precision=0"),
    ("sweep", ["sweep.caps=[0.5]"], "sweep.caps"),
    ("sweep", ["sweep.family=cnn"], "sweep.family='cnn'; accepted: bc (MLP behaviour cloning), bc-image"),
    ("sweep", ["sweep.family=mpc"], "sweep.family=mpc trains nothing: it plans with the world model"),
    ("pipeline", ["pipeline.rounds=0"], "pipeline.rounds=0"),
    ("pipeline", ["audit.per_task=1"], "filter.quality_threshold=auto needs at least 2 audited dreams per task"),
    ("pipeline", ["generate.episodes=1", "generate.episodes_per_chunk=1"], "button-press-topdown-v3 gets 1 (audit.per_task=8, 1 dream of it)"),
    ("pipeline", ["pipeline.rounds=2", "generate.sampler.kind=expert"], "pipeline.rounds=2 with generate.sampler.kind=expert"),
    ("pipeline", ["pipeline.rounds=2", "generate.sampler.kind=policy", "pipeline.round_cap=0"], "pipeline.round_cap=0"),
    ("collect", ["tasks=[drawer-opn-v3]"], "unknown task 'drawer-opn-v3'"),
    # embodiments: an unknown name, a task, a store and a checkpoint of another robot
    ("collect", ["embodiment=ur5"], "embodiment='ur5' is not an embodiment; accepted: metaworld, fetch, data"),
    ("collect", ["tasks=[FetchReach-v4]"], "unknown task 'FetchReach-v4' for embodiment metaworld"),
    ("train-world-model", ["world_model.store={other_store}"], "was made for embodiment fetch, not metaworld"),
    ("generate", ["generate.world_model={other_world_model}"], "was made for embodiment fetch, not metaworld"),
    ("evaluate", ["evaluate.policy={other_policy}"], "was made for embodiment fetch, not metaworld"),
    ("generate", ["generate.sampler.kind=policy", "generate.sampler.policy={other_policy}"],
     "was made for embodiment fetch, not metaworld"),
    ("generate", ["generate.sampler.kind=sb3", "generate.sampler.sb3.checkpoint={smoke}/policy"],
     "is a 'bc' policy; this needs kind sb3"),
    ("collect", ["tracking.uri=mlflow.db"], "tracking.uri='mlflow.db' is a bare path"),
    ("collect", ["embodiment=fetch", "robot.name=arm7"], "robot.name='arm7' describes a robot known from its data"),
    ("generate", ['generate.instructions=["打开抽屉"]'], "has no English word"),
    ("generate", ["generate.instructions=[open the drawer and then press the button from the top]"],
     "asks for 2 tasks in sequence"),
    ("generate", ["generate.instructions=[open the fridge]"], "names 'fridge'"),
    # language: resolver settings, negated, blank, verbless and unknown instructions (also with allow_novel)
    ("generate", ["language.min_similarity=2"], "language.min_similarity=2"),
    ("generate", ["language.ambiguity_margin=-0.1"], "language.ambiguity_margin=-0.1"),
    ("generate", ["generate.instructions=[do not open the drawer]"], "'do not open the drawer' is negated"),
    ("generate", ["generate.instructions=[never press the button]", "generate.allow_novel=true"], "is negated"),
    ("generate", ["generate.instructions=['   ']"], "instruction is empty"),
    ("generate", ["generate.instructions=[the drawer]", "generate.allow_novel=true"], "'the drawer' has no verb"),
    ("generate", ["generate.instructions=[bake a cake]"], "'bake a cake' matches no known task"),
    # run directories
    ("collect", ["run_dir={a_file}"], "is a file; give a directory"),
    ("collect", ["run_dir={foreign}"], "not a dreamgen run"),
    ("collect", ["run_dir={smoke}", "seed=5"], "holds a different run"),
    ("collect", ["run_dir=/proc/dreamgen-run"], "/proc/dreamgen-run"),
    # tracking URIs: refused within seconds, not after minutes of retries
    ("collect", ["tracking.uri=http://127.0.0.1:{port}"], "nothing answers there within 5 s"),
    ("collect", ["tracking.uri=ftp://example/x"], "scheme 'ftp' is not supported"),
    ("collect", ["tracking.uri=sqlite:////nonexistent/dir/m.db"], "does not exist or is not writable"),
    # stores and checkpoints: damaged, edited, unreadable
    ("train-policy", ["policy.store={flipped_store}"], "data/obs does not read back"),
    ("train-world-model", ["world_model.store={deleted_store}"], "chunk data/reward/c/0 is missing"),
    ("evaluate", ["evaluate.policy={edited_policy}"], "changed after the policy was written"),
    ("evaluate", ["evaluate.policy={not_json_policy}"], "policy.json: not a policy spec"),
    ("evaluate", ["evaluate.policy={missing}"], "not a policy checkpoint"),
    ("generate", ["generate.world_model={edited_world_model}"], "changed after the world-model was written"),
    ("filter", ["filter.quality={unchecked_quality}", "filter.world_model={smoke}/world_model",
                "filter.store={smoke}/real.zarr"], "quality.json: no content_sha256"),
    ("train-quality", ["quality.labels={corrupt_labels}", "quality.real_store={smoke}/real.zarr"],
     "labels.json: not valid JSON"),
]


def _fill(overrides: list[str], values: dict[str, str]) -> list[str]:
    return [o.format(**values) for o in overrides]


@pytest.mark.parametrize(("verb", "overrides", "expect"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_a_bad_input_gets_one_sentence_exit_2_and_leaves_the_run_dir_as_it_was(
        verb, overrides, expect, smoke_run, damaged, tmp_path, capsys):
    values = {**{k: str(v) for k, v in damaged.items()}, "smoke": str(smoke_run["run_dir"]),
              "missing": str(tmp_path / "missing"), "port": str(_free_port())}
    overrides = _fill(overrides, values)
    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")), str(tmp_path / "run"))
    base = ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false"]
    base = [b for b in base if b.split("=")[0] not in {o.split("=")[0] for o in overrides}]
    before = _snapshot(Path(run_dir))
    code, stderr = in_process(verb, [*base, f"run_dir={run_dir}", *overrides], capsys)
    err = stderr.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("dreamgen: error: "), err
    assert expect in err[0], err[0]
    assert _snapshot(Path(run_dir)) == before


def test_the_cli_refuses_a_few_typed_mistakes_the_same_way(tmp_path):
    """Through the real CLI: Hydra's parsing, the verb's entrypoint, stderr and the exit code together."""
    base = ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false",
            f"run_dir={tmp_path / 'run'}"]
    for overrides, expect in ((["collect.n_expert=2.5"], "collect.n_expert=2.5: must be an integer"),
                              ([f"tracking.uri=http://127.0.0.1:{_free_port()}"], "nothing answers there"),
                              # Hydra-level mistakes: one sentence with the close matches, not Hydra's page
                              (["collect.n_expertt=3"], "collect.n_expertt is not a setting; did you mean collect.n_expert"),
                              (["experiment=smok"], "experiment=smok is not a preset; did you mean smoke"),
                              (["planner.lambda=3"], "did you mean planner.penalty"),
                              (["planner.success_weight=20"], "planner.success_weight is now planner.objective.success"),
                              (["generate.instructions=[打开抽屉]"], "cannot read the override 'generate.instructions=[打开抽屉]'")):
        given = {o.split("=")[0] for o in overrides}
        result = dreamgen("collect", *[b for b in base if b.split("=")[0] not in given], *overrides, cwd=tmp_path,
                          check=False, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expect in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_tracking_server_that_refuses_us_is_not_counted_as_reachable(monkeypatch):
    """An HTTP 401 on /health is not MLflow answering: refused, naming the credentials it needs."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dreamgen.errors import ConfigError
    from dreamgen.tracking import check_uri

    class Deny(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ConfigError, match="answered 401 Unauthorized on /health; its credentials .* are not set"):
            check_uri(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "wrong")
        with pytest.raises(ConfigError, match="were refused"):
            check_uri(uri)
    finally:
        server.shutdown()


def test_conventions_users_rely_on_tracking_uri_from_the_environment_and_offline_hub_clients(monkeypatch):
    import subprocess
    import sys

    from hydra import compose, initialize_config_dir

    def uri() -> str:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            return str(compose(config_name="config", overrides=["experiment=smoke"]).tracking.uri)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert uri() == "http://127.0.0.1:5999"
    clean = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_OFFLINE")}
    seen = subprocess.run([sys.executable, "-c", "import os, jobs; print(os.environ['HF_HUB_OFFLINE'], "
                           "os.environ['TRANSFORMERS_OFFLINE'])"], env={**clean, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=True, cwd=REPO)
    assert seen.stdout.split() == ["1", "1"]


def arm_without_simulator():
    """A robot known only from its data: no simulator, no scripted expert (``dreamgen.sim.base``)."""
    from dreamgen.sim.base import Embodiment, TaskSpec
    from dreamgen.world_model.base import ObsLayout

    class Arm(Embodiment):
        name = "arm7"
        layout = ObsLayout("arm7-state", 7, dynamic=(0, 7))
        action_dim = 2
        max_steps = 300
        fps = 10
        robot_type = "arm7"
        tasks = {"wave": TaskSpec("wave", ("wave the arm",))}
        has_simulator = False
        has_expert = False

    return Arm()


@pytest.mark.parametrize(("verb", "says"), [
    ("audit", "`dreamgen audit` needs a simulator and embodiment arm7 has none; judge its dreams by the learned"),
    ("evaluate", "`dreamgen evaluate` needs a simulator and embodiment arm7 has none; judge the policy in the world "
                 "model's dream (evaluate.where=dream), or measure it on the robot"),
    ("collect", "`dreamgen collect` needs a simulator and embodiment arm7 has none; import its demonstrations"),
    ("pipeline", "`dreamgen pipeline` on embodiment arm7, which has no simulator: its sweep can only be judged in the "
                 "world model's dream; set sweep.judge=dream"),
])
def test_a_robot_without_a_simulator_is_refused_where_a_simulator_is_needed(verb, says, monkeypatch, tmp_path, capsys):
    import sys

    import jobs.common

    monkeypatch.setitem(jobs.common.EMBODIMENTS, "arm7", (__name__, "ARM7"))  # the registry: name -> object
    monkeypatch.setattr(sys.modules[__name__], "ARM7", arm_without_simulator(), raising=False)
    code, stderr = in_process(verb, ["experiment=smoke", "embodiment=arm7", "tasks=[wave]", f"run_dir={tmp_path / 'run'}",
                                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false"], capsys)
    err = stderr.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "run").exists()

"""The verbs of ``dreamgen <verb>``: what each does and the module it runs. The CLI and the Ray Jobs client
(``dreamgen.ray_jobs``) both read this table; neither imports the other."""

from __future__ import annotations

VERBS = {
    "collect": "collect real demos and play in the embodiment's simulator (or import a LeRobotDataset)",
    "export": "write a store (or a selection) as a LeRobotDataset v3",
    "train-world-model": "fit the ensemble world model on a store's real episodes (+ fidelity report)",
    "generate": "dream language-conditioned episodes on Ray into run_dir/dream.zarr (resumable)",
    "audit": "replay dreams in the real simulator: real outcome per dream, filter precision/recall",
    "train-quality": "train the quality model on real episodes and audited dreams",
    "filter": "verdict + reason per dream (physical checks, disagreement, quality), written to the store",
    "train-policy": "train the language-conditioned BC policy on real demos (+ capped accepted dreams)",
    "evaluate": "evaluate a policy on the real simulator (per-task success, Wilson 95% CI)",
    "sweep": "augmentation-ratio experiment: caps x seeds, each arm trained on real + capped dreams and evaluated",
    "pipeline": "the main job: collect -> train-world-model -> generate -> audit -> train-quality -> filter -> audit -> sweep",
    "runs": "list the MLflow runs of the tracking experiment",
    "submit": "submit any verb as a Ray Job: dreamgen submit [--address URL] [--no-wait] <verb> [overrides]",
    "jobs": "a submitted Ray Job: dreamgen jobs status|logs|stop ID (or list) [--address URL]",
}
CLUSTER_VERBS = ("submit", "jobs")  # the CLI hands these to dreamgen.ray_jobs; every other verb is a module under jobs/


def module_of(verb: str) -> str:
    """The Hydra entry module a verb runs (``train-policy`` -> ``jobs.train_policy``)."""
    return f"jobs.{verb.replace('-', '_')}"


USAGE = "usage: dreamgen <verb> [hydra overrides, e.g. experiment=smoke run_dir=runs/x seed=1]\n\nverbs:\n" + \
    "\n".join(f"  {verb:14s} {text}" for verb, text in VERBS.items())

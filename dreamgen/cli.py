"""``dreamgen <verb> [hydra overrides]``: each verb runs the Hydra entry module ``jobs.<verb>``.

``dreamgen collect experiment=smoke run_dir=D`` is exactly ``python -m jobs.collect experiment=smoke
run_dir=D`` (same config, same behaviour): the module is run in this process with the overrides.
"""

from __future__ import annotations

import runpy
import sys

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
CLUSTER_VERBS = ("submit", "jobs")  # handled here; every other verb is a module under jobs/


def module_of(verb: str) -> str:
    """The Hydra entry module a verb runs (``train-policy`` -> ``jobs.train_policy``)."""
    return f"jobs.{verb.replace('-', '_')}"

USAGE = "usage: dreamgen <verb> [hydra overrides, e.g. experiment=smoke run_dir=runs/x seed=1]\n\nverbs:\n" + \
    "\n".join(f"  {verb:14s} {text}" for verb, text in VERBS.items())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    verb, overrides = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"dreamgen: error: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    if verb in CLUSTER_VERBS:
        from dreamgen.errors import DreamgenError
        from dreamgen.generate.submit import main_jobs, main_submit

        try:
            sys.exit((main_submit if verb == "submit" else main_jobs)(overrides))
        except DreamgenError as exc:
            print(f"dreamgen: error: {exc}", file=sys.stderr)
            sys.exit(2)
    module = module_of(verb)
    sys.argv = [module, *overrides]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

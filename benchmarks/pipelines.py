"""The augmentation gain over independent pipelines (issue 25, item 5): the whole main job — collection, world model,
generation, audit split — once per pipeline seed, each reported, and a gain pooled over them whose interval holds the
spread between pipelines (``dreamgen.sweep.pipeline_bootstrap``: pipelines, then episodes, drawn with replacement).

The pipeline seed draws the collection's demos and layouts, the world model's split and initialisation, the dreams and
their audit sample; the sweep's training seeds and evaluation layouts are the same in every pipeline. A pipeline whose
run dir already holds a finished report is only read, so an interrupted benchmark resumes:

    python benchmarks/pipelines.py --root runs/pipelines                      # seeds 0 1 2 of `make demo` (~50 min)
    python benchmarks/pipelines.py --root runs/pipelines --seeds 0 1 2 3 4    # more pipelines, the first three kept
    python benchmarks/pipelines.py --root runs/pipelines-known --override generate.sampler.kind=planner \
        '~planner.objective.reward' '~planner.objective.success' +planner.objective.goal=1 \
        +planner.objective.approach=1 dream.success_head=rule                 # the same, with known-cost planner dreams

Every ``--override`` goes to every pipeline as a Hydra override, after the preset; a root's pipelines must share
them (a run dir refuses a rerun with other overrides).

Writes ``pipelines.json`` and logs it to MLflow (experiment ``pipelines``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from judge import cli  # benchmarks/judge.py: the real CLI in a subprocess, timed

from dreamgen.sweep import pipeline_bootstrap


def audited(report: dict, tasks: list[str]) -> str:
    """Held-out audited dreams that really succeed in the real simulator, per task."""
    per = report["audit"]["filters"]["accept-all"].get("per_task", {})
    return ", ".join(f"{t.removesuffix('-v3')} {per[t]['precision']['hits']}/{per[t]['precision']['of']}"
                     for t in tasks if t in per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="parent of one run dir per pipeline seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pipeline seeds (>= 3 for a spread)")
    parser.add_argument("--experiment", default="demo", help="the preset of every pipeline")
    parser.add_argument("--draws", type=int, default=10000, help="bootstrap draws")
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for every pipeline (not run_dir, seed or tracking.uri)")
    args = parser.parse_args()
    owned = [o for o in args.override if o.lstrip("~+").split("=")[0] in ("run_dir", "seed", "tracking.uri")]
    if owned:
        parser.error(f"--override {owned[0]}: the benchmark sets run_dir, seed and tracking.uri itself")
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "pipelines.log"
    reports, minutes = {}, {}
    for seed in args.seeds:
        run = root / f"seed{seed}"
        if not (run / "report.json").is_file():
            print(f"pipeline seed {seed}: running (log {log})", flush=True)
            minutes[seed] = cli("pipeline", f"experiment={args.experiment}", f"run_dir={run}", f"seed={seed}",
                                f"tracking.uri=sqlite:///{root / 'mlflow.db'}", "progress=false", *args.override,
                                log=log) / 60
        reports[seed] = json.loads((run / "report.json").read_text())
    sweeps = [r["sweep"] for r in reports.values()]
    tasks = list(sweeps[0]["tasks"])
    caps = [c for c in sweeps[0]["per_cap"] if c != "0"]

    print(f"\n{'seed':>4s} {'world model':16s} {'accepted':>8s} {'real-only':>9s} "
          + " ".join(f"{'cap ' + c:>8s} {'gain':>6s} {'- ctl':>6s}" for c in caps) + "  audited dreams really succeeding")
    for seed, report in reports.items():
        s = report["sweep"]
        cells = " ".join(f"{s['per_cap'][c]['success_rate']:8.2f} {s['per_cap'][c]['gain']:+6.2f} "
                         f"{s['per_cap'][c].get('content_gain', float('nan')):+6.2f}" for c in caps)
        print(f"{seed:4d} {report['world_model']['world_model_id']:16s} {int(report['filter']['filter/accepted']):8d} "
              f"{s['per_cap']['0']['success_rate']:9.2f} {cells}  {audited(report, tasks)}")

    pooled = {f"{c}/{against}": pipeline_bootstrap(sweeps, c, against, draws=args.draws)
              for c in caps for against in ("real-only", "control")}
    print(f"\npooled over {len(sweeps)} pipelines (mean of their gains; 95% bootstrap over pipelines and episodes)")
    print(f"{'cap':>5s} {'against':10s} {'overall':>22s} " + " ".join(f"{t.removesuffix('-v3'):>22s}" for t in tasks))
    for key, p in pooled.items():
        cap, against = key.split("/")
        show = lambda g: f"{g['gain']:+.2f} [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}]"  # noqa: E731
        print(f"{cap:>5s} {against:10s} {show(p['overall']):>22s} "
              + " ".join(f"{show(p['tasks'][t]):>22s}" for t in tasks))
    out = {"experiment": args.experiment, "overrides": args.override, "seeds": list(reports), "tasks": tasks, "minutes": minutes,
           "per_pipeline": {seed: {"world_model_id": r["world_model"]["world_model_id"],
                                   "accepted": int(r["filter"]["filter/accepted"]),
                                   "per_cap": {c: {"success_rate": r["sweep"]["per_cap"][c]["success_rate"],
                                                   "gain": r["sweep"]["per_cap"][c].get("gain"),
                                                   "content_gain": r["sweep"]["per_cap"][c].get("content_gain"),
                                                   "tasks": {t: r["sweep"]["per_cap"][c]["tasks"][t]["success_rate"]
                                                             for t in tasks}}
                                               for c in r["sweep"]["per_cap"]}}
                            for seed, r in reports.items()},
           "pooled": pooled}
    (root / "pipelines.json").write_text(json.dumps(out, indent=2))

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("pipelines")
    with mlflow.start_run(run_name=f"{args.experiment}-{len(sweeps)}-pipelines"):
        mlflow.log_params({"experiment": args.experiment, "overrides": " ".join(args.override),
                           "seeds": list(reports), "draws": args.draws})
        mlflow.log_metrics({f"{key.replace('/', '_vs_')}/{name}": value
                            for key, p in pooled.items()
                            for name, value in (("gain", p["overall"]["gain"]), ("ci95_low", p["overall"]["ci95"][0]),
                                                ("ci95_high", p["overall"]["ci95"][1]))})
        mlflow.log_dict(out, "pipelines.json")
    print(f"-> {root / 'pipelines.json'} (MLflow experiment pipelines)")


if __name__ == "__main__":
    main()

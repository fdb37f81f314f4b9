"""What dreams are worth in demos (issue 25): real-only BC at 5, 10, 20 and 40 demos per task on the same tasks and
evaluation layouts (each a real-only sweep: 3 training seeds, the sweep's evaluation), next to a pipeline's 5 demos +
dreams (its sweep's recommended cap, or ``--cap``); the curve as a table and a PNG logged to MLflow, and the sentence
"dreams were worth N demos per task": the demo count at which the real-only curve, linear between its points in
log(demos), reaches the dream arm's success.

The 5-demo point is the pipeline's own cap-0 arms; each other count is its own collection with the same run seed
(nested layouts: the 10-demo store holds the 5-demo one's demos and 5 more):

    dreamgen pipeline experiment=demo run_dir=runs/worth/bc5       # or link `make demo`'s run as bc5
    python benchmarks/demos_worth.py --root runs/worth

One collection per count and one pipeline (one world model, one generation): the curve's intervals cover evaluation
episodes and training seeds only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from judge import cli  # benchmarks/judge.py: the real CLI in a subprocess, timed

from dreamgen.sweep import equivalent_demos, worth_sentence

DEMOS = (5, 10, 20, 40)


def plot(path: Path, demos: list[int], real: list[dict], dream: dict, cap: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ys = [r["success_rate"] for r in real]
    ax.errorbar(demos, ys, yerr=[[y - r["ci95_low"] for y, r in zip(ys, real, strict=True)],
                                 [r["ci95_high"] - y for y, r in zip(ys, real, strict=True)]],
                marker="o", capsize=3, label="real only (BC, 3 seeds)")
    ax.errorbar([demos[0]], [dream["success_rate"]], yerr=[[dream["success_rate"] - dream["ci95_low"]],
                                                           [dream["ci95_high"] - dream["success_rate"]]],
                marker="*", markersize=12, capsize=3, color="C3", label=f"{demos[0]} demos + dreams (cap {cap:g})")
    ax.axhline(dream["success_rate"], color="C3", linestyle=":", linewidth=1)
    ax.set(xscale="log", xticks=demos, xticklabels=[str(d) for d in demos], xlabel="demos per task",
           ylabel="real-simulator success", ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="holds bc5/ (a pipeline run with its sweep)")
    parser.add_argument("--experiment", default="demo", help="the preset of every run")
    parser.add_argument("--cap", type=float, default=None, help="the dream arm (default: the sweep's recommended cap)")
    args = parser.parse_args()
    root = args.root.resolve()
    log = root / "demos_worth.log"
    base = [f"experiment={args.experiment}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}", "progress=false"]
    pipeline = json.loads((root / "bc5" / "sweep" / "sweep.json").read_text())
    seconds: dict[int, float] = {}
    sweeps = {DEMOS[0]: pipeline}
    for k in DEMOS[1:]:
        run = root / f"bc{k}"
        if not (run / "sweep" / "sweep.json").is_file():
            own = [*base, f"run_dir={run}", f"collect.n_expert={k}"]
            seconds[k] = 0.0 if (run / "real.zarr").is_dir() else cli("collect", *own, log=log)
            seconds[k] += cli("sweep", *own, "sweep.caps=[0]", "sweep.control=false",  # the run's own store
                              f"sweep.seeds={list(pipeline['seeds'])}", log=log)
        sweeps[k] = json.loads((run / "sweep" / "sweep.json").read_text())
    cap = args.cap if args.cap is not None else pipeline["recommended_cap"]
    if cap is None or f"{cap:g}" not in pipeline["per_cap"]:
        raise SystemExit(f"the pipeline's sweep has no arm at cap {cap} (caps {pipeline['caps']}); give --cap")
    dream = pipeline["per_cap"][f"{cap:g}"]
    real = [sweeps[k]["per_cap"]["0"] for k in DEMOS]
    tasks = list(pipeline["tasks"])
    for k, sweep in sweeps.items():
        if list(sweep["tasks"]) != tasks or sweep["episodes_per_task"] != pipeline["episodes_per_task"]:
            raise SystemExit(f"bc{k}'s sweep evaluated {sweep['tasks']} x {sweep['episodes_per_task']}; the pipeline "
                             f"{tasks} x {pipeline['episodes_per_task']}: not the same evaluation")

    report: dict = {"demos": list(DEMOS), "cap": cap, "tasks": tasks, "seeds": pipeline["seeds"],
                    "episodes_per_task": pipeline["episodes_per_task"], "seconds": seconds,
                    "world_model_id": pipeline["dream_selection"]["filter"]["world_model_id"], "per_task": {}}
    rows = [("overall", [r["success_rate"] for r in real], dream["success_rate"])]
    rows += [(t, [r["tasks"][t]["success_rate"] for r in real], dream["tasks"][t]["success_rate"]) for t in tasks]
    print(f"{'':18s} " + " ".join(f"{f'{k} demos':>10s}" for k in DEMOS) + f" {f'{DEMOS[0]} + dreams':>12s}  worth")
    for name, ys, d in rows:
        worth = equivalent_demos(list(zip(DEMOS, ys, strict=True)), d)
        report["per_task"][name] = {"real_only": dict(zip(map(str, DEMOS), ys, strict=True)), "dreams": d,
                                    "worth_demos": worth}
        shown = f"> {DEMOS[-1]}" if worth is None else f"{worth:.1f}"
        print(f"{name:18s} " + " ".join(f"{y:10.2f}" for y in ys) + f" {d:12.2f}  {shown}")
    overall = report["per_task"]["overall"]["worth_demos"]
    report["overall"] = {"real_only": real, "dreams": dream, "worth_demos": overall,
                         "sentence": worth_sentence(overall, DEMOS[0], DEMOS[-1])}
    print(f"\n{report['overall']['sentence']} (overall; cap {cap:g}, {len(pipeline['seeds'])} training seeds, "
          f"{pipeline['episodes_per_task']} episodes per task per arm)")
    png = root / "demos_worth.png"
    plot(png, list(DEMOS), real, dream, cap, report["overall"]["sentence"][:58])
    (root / "demos_worth.json").write_text(json.dumps(report, indent=2, default=float))

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("demos-worth")
    with mlflow.start_run(run_name=f"{args.experiment}-cap{cap:g}"):
        mlflow.log_params({"demos": list(DEMOS), "cap": cap, "world_model_id": report["world_model_id"]})
        mlflow.log_metrics({f"real_only/{k}": y for k, y in zip(DEMOS, rows[0][1], strict=True)}
                           | {"dreams": dream["success_rate"]} | ({"worth_demos": overall} if overall else {}))
        mlflow.log_artifact(str(png))
        mlflow.log_dict(report, "demos_worth.json")
    print(f"-> {root / 'demos_worth.json'}, {png} (MLflow experiment demos-worth)")


if __name__ == "__main__":
    main()

"""Augmentation gain (EVALUATION.md §2): does filtered dream data raise real success, and at what cap?

Runs the main job (``dreamgen pipeline experiment=augment``) once per (sampler, demos per task) row —
the oracle expert acting in the dream (labelled as the oracle it is), and the samplers a user really
has: the BC policy + noise, MPC in the dream with BC as its prior (``planner``), recovery dreams,
retargeted demo paths followed in the dream (``retarget``), PPO in the dream (``sb3``), and retargeting
on the second real world (``fetch-retarget-5``), and recovery dreams in pixels from a latent world model
with image policies (``pixels-recovery-5``) — then prints, per row and cap, real-simulator success
pooled over the tasks and training seeds, the gain over real-only, and the dreams' gain over the control
arm (the same share of re-drawn real frames), with 95% intervals. A row whose run dir already holds a finished pipeline is
only read (``--runs`` keeps them), so an interrupted benchmark resumes.

    python benchmarks/augmentation.py --runs runs/augment            # all rows (~1 h on 2 cores)
    python benchmarks/augmentation.py --runs runs/augment --rows oracle-5 policy-5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = {  # name: (sampler kind, expert demos per task, experiment preset)
    "oracle-5": ("expert", 5, "augment"),
    "oracle-10": ("expert", 10, "augment"),
    "policy-5": ("policy", 5, "augment"),
    "policy-10": ("policy", 10, "augment"),
    "planner-5": ("planner", 5, "augment"),
    "recovery-5": ("recovery", 5, "augment"),
    "retarget-5": ("retarget", 5, "augment"),
    "sb3-5": ("sb3", 5, "augment"),
    "fetch-retarget-5": ("retarget", 5, "fetch-augment"),  # the second real world (gymnasium-robotics Fetch)
    "pixels-recovery-5": ("recovery", 5, "pixel-augment"),  # cameras: latent world model, image BC arms
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/augment", help="parent of one run dir per row")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--tracking", default="sqlite:///mlflow.db")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row")
    args = parser.parse_args()
    lines = [f"{'row':10s} {'sampler':8s} {'demos':>5s} {'cap':>5s} {'accepted':>8s} {'achieved':>8s} "
             f"{'success':>8s} {'95% CI':>13s} {'gain':>7s} {'gain 95% CI':>16s} {'control':>8s} "
             f"{'vs control 95% CI':>18s} {'minutes':>7s}"]
    for name in args.rows:
        kind, demos, experiment = ROWS[name]
        run_dir = Path(args.runs) / name
        report_path = run_dir / "report.json"
        if not report_path.is_file():
            command = [sys.executable, "-m", "jobs.pipeline", f"experiment={experiment}", f"run_dir={run_dir}",
                       f"collect.n_expert={demos}", f"generate.sampler.kind={kind}", f"tracking.uri={args.tracking}",
                       "progress=false", *args.overrides]
            print("$", " ".join(command), flush=True)
            started = time.monotonic()
            subprocess.run(command, check=True)
            print(f"{name}: {(time.monotonic() - started) / 60:.1f} min", flush=True)
        report = json.loads(report_path.read_text())
        swept = report["sweep"]
        accepted = int(report["filter"]["filter/accepted"])
        for key, row in swept["per_cap"].items():
            ctl = (f"{row['control']['success_rate']:8.3f} [{row['content_gain_ci95'][0]:+.2f}, "
                   f"{row['content_gain_ci95'][1]:+.2f}]" if "control" in row else f"{'-':>8s} {'-':>18s}")
            lines.append(f"{name:10s} {kind:8s} {demos:5d} {key:>5s} {accepted:8d} {row['achieved_fraction']:8.3f} "
                         f"{row['success_rate']:8.3f} [{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] "
                         f"{row['gain']:+7.3f} [{row['gain_ci95'][0]:+.2f}, {row['gain_ci95'][1]:+.2f}] "
                         f"{ctl} {report['seconds'] / 60:7.1f}")
        audit = report["audit"]["filters"]
        real = audit["accept-all"]["overall"]["precision"]
        learned = audit.get("learned-filter", {}).get("overall", {}).get("precision", {})
        lines.append(f"{'':10s} audited dreams really succeeding (held-out fold): {real['hits']}/{real['of']}; "
                     f"filter precision {learned.get('hits', 0)}/{learned.get('of', 0)}")
        lines.append(f"{'':10s} {swept['verdict']}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""World-model fidelity at contact (EVALUATION.md §3): the same real store, one world model per variant, side by
side in one process, measured on the run's held-out test episodes and on a second, independent collection.

Variants (everything else is configs/config.yaml's world_model section):
  none        no contact gate (world_model.contact_gate=null)
  oversample  no gate; transitions where the object moves > 1 mm drawn 10x as often
  gate        world_model.contact_gate=object (the default)

    dreamgen collect experiment=demo run_dir=runs/contact/a
    dreamgen collect experiment=demo seed=1 run_dir=runs/contact/b
    python benchmarks/contact.py --store runs/contact/a/real.zarr --extra runs/contact/b/real.zarr
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dreamgen.data.store import TrajectoryStore
from dreamgen.language import default_encoder
from dreamgen.seeding import make_rng
from dreamgen.sim.metaworld import HAND_SLICE, METAWORLD_LAYOUT, OBJECT_SLICE
from dreamgen.world_model import fit as fitting
from dreamgen.world_model.base import InstructionTable
from dreamgen.world_model.ensemble import EnsembleConfig
from dreamgen.world_model.metrics import fidelity_report

PARTS = {"hand": HAND_SLICE, "object": OBJECT_SLICE}


def fit(variant: str, data: dict, table: InstructionTable, seed: int):
    gate = (OBJECT_SLICE.start, OBJECT_SLICE.stop) if variant == "gate" else None
    config = EnsembleConfig(gate=gate)
    draw = torch.randint
    if variant == "oversample":  # the bootstrap draws moving transitions 10x as often
        moving = np.linalg.norm(data["train"].target[:, OBJECT_SLICE], axis=1) > 1e-3
        weight = torch.as_tensor(np.where(moving, 10.0, 1.0), dtype=torch.float64)

        def biased(high, size, generator=None, **kw):
            if high == len(weight):
                return torch.multinomial(weight, int(np.prod(size)), replacement=True, generator=generator).reshape(size)
            return draw(high, size, generator=generator, **kw)
        fitting.torch.randint = biased  # type: ignore[assignment]
    try:
        return fitting.fit_ensemble(data["train"], data["val"], table, METAWORLD_LAYOUT, config, seed=seed)
    finally:
        fitting.torch.randint = draw  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="the run's real store (train / val / test as train-world-model)")
    parser.add_argument("--extra", required=True, help="a second collection: every episode held out")
    parser.add_argument("--variants", default="none,oversample,gate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    episodes = [e for e in TrajectoryStore.open(args.store).iter_episodes() if e.meta["source"] == "real"]
    extra = [e for e in TrajectoryStore.open(args.extra).iter_episodes() if e.meta["source"] == "real"]
    texts = sorted({e.meta["instruction"] for e in episodes})
    task_of = {e.meta["instruction"]: e.meta["task"] for e in episodes}
    table = InstructionTable(texts, [task_of[t] for t in texts], default_encoder().encode(texts))
    split = fitting.split_episodes([e.meta["task"] for e in episodes], (0.1, 0.1), make_rng(args.seed, "world-model-split"))
    train, val, test = ([episodes[i] for i in part] for part in split)
    history = EnsembleConfig().action_history
    held = {"test": test, "extra": extra}
    data = {name: fitting.transitions(part, METAWORLD_LAYOUT, table, history)
            for name, part in (("train", train), ("val", val), *held.items())}
    print("| variant | held out | one-step nMSE (copy) | H | object mm median / p90 (copy median) | hand mm median "
          "| moved objects followed (starts) | object at rest drifts mm | fit s |")
    print("| --- | --- | --- | ---: | --- | ---: | --- | ---: | ---: |")
    for variant in args.variants.split(","):
        start = time.perf_counter()
        model = fit(variant, data, table, args.seed)
        seconds = time.perf_counter() - start
        for name, part in held.items():
            report = fidelity_report(model, part, data[name], (10, 50), parts=PARTS)
            one = report["one_step"]
            for h, e in report["open_loop"].items():
                print(f"| {variant} | {name} ({len(part)} episodes) | {one['nmse']:.5f} ({one['copy_nmse']:.5f}) | {h} "
                      f"| {e['object_mm']['median']:.1f} / {e['object_mm']['p90']:.1f} ({e['object_copy_mm']['median']:.1f}) "
                      f"| {e['hand_mm']['median']:.1f} | {e['object_moved_followed']:.2f} ({e['object_moved_starts']}) "
                      f"| {e['object_still_drift']['median']:.1f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()

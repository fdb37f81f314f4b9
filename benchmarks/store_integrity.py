"""What integrity on read costs: reading a store whose chunks carry CRC-32C checksums vs the same arrays
without them, side by side in one run, plus ``TrajectoryStore.open`` (which checks every committed chunk
exists).

    python benchmarks/store_integrity.py [--episodes 2000] [--length 150] [--rounds 7]

Both stores hold the same random episodes (Meta-World's 39-dim state, 4-dim action), written by
``TrajectoryStore.append``; the comparison store is a copy of every array re-encoded without the
checksum codec (zstd level 0 alone, as before checksums). Each round reads every frame array of both,
in alternating order; the table gives the median frames/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import zarr
    from zarr.codecs import ZstdCodec

    from dreamgen.data.store import TrajectoryStore
    from dreamgen.types import FRAME_KEYS
    from tests.conftest import make_episode

    root = Path(tempfile.mkdtemp(prefix="dreamgen-integrity-"))
    try:
        rng = np.random.default_rng(0)
        store = TrajectoryStore.create(root / "checked.zarr", obs_dim=39, action_dim=4)
        for start in range(0, args.episodes, 200):
            store.append([make_episode(rng, args.length, i) for i in range(start, min(start + 200, args.episodes))])
        plain = zarr.open_group(str(root / "plain.zarr"), mode="w", zarr_format=3)
        for key in FRAME_KEYS:
            source = zarr.open_array(str(root / "checked.zarr" / "data" / key), mode="r")
            plain.create_array(key, data=source[:], chunks=source.chunks, compressors=[ZstdCodec(level=0)])
        frames = store.n_frames

        def read_checked() -> None:
            for key in FRAME_KEYS:
                np.asarray(zarr.open_array(str(root / "checked.zarr" / "data" / key), mode="r")[:frames])

        def read_plain() -> None:
            for key in FRAME_KEYS:
                np.asarray(zarr.open_array(str(root / "plain.zarr" / key), mode="r")[:frames])

        timings: dict[str, list[float]] = {"checked": [], "plain": [], "open": []}
        for index in range(args.rounds):
            order = [("checked", read_checked), ("plain", read_plain)]
            for name, read in order if index % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                read()
                timings[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            TrajectoryStore.open(root / "checked.zarr")
            timings["open"].append(time.perf_counter() - started)
        checked, plain_s = statistics.median(timings["checked"]), statistics.median(timings["plain"])
        print(f"machine: {platform.processor() or platform.machine()}, {args.episodes} episodes x {args.length} "
              f"frames = {frames} frames, median of {args.rounds} rounds\n")
        print("| read every frame array | frames/s | ratio to no checksums |")
        print("| --- | ---: | ---: |")
        print(f"| without checksums (zstd) | {frames / plain_s:,.0f} | 1.00 |")
        print(f"| with CRC-32C per chunk (zstd + crc32c) | {frames / checked:,.0f} | {plain_s / checked:.2f} |")
        print(f"\n`TrajectoryStore.open` (layout + every committed chunk present): "
              f"{statistics.median(timings['open']) * 1e3:.1f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

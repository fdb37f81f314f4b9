"""TrajectoryStore: episodes at rest in zarr v3, Diffusion-Policy replay-buffer layout.

Layout::

    <path>/                     zarr group, attrs: format, schema_version, obs_dim, action_dim,
                                n_episodes, n_frames (the commit record), and free-form ``info``
    <path>/data/<key>           per-frame arrays concatenated over time (obs, action, reward, ...)
    <path>/data/images          image stores only: uint8[N, C, H, W, 3], one chunk per frame; the root's
                                ``cameras`` attribute names the C cameras and the resolution
    <path>/data/unsafe          labelled stores only: bool[N, E], the safety events after each action; the
                                root's ``safety`` attribute names the E events and their thresholds
    <path>/meta/episode_ends    int64[E], exclusive end frame of each episode
    <path>/meta/<field>         per-episode metadata (episode_id, source, task, instruction, seed, ...)

Integrity: every chunk carries a CRC-32C checksum (zarr's ``crc32c`` codec, checked on every decode) and
every chunk below the committed length must exist (checked on ``open``; zarr would read a missing chunk
back as zeros). A deleted, truncated or altered chunk is refused with the store, array and episodes
named — never read as zeros or garbage. Chunks are always written, even when all-fill (``done`` is
mostly False), so a missing one is always damage.

Atomicity: ``append`` validates everything first, writes the new rows past the committed length,
and only then rewrites the root attributes (one atomic file replace in zarr's LocalStore) with the
new ``n_episodes``/``n_frames``. Readers only ever look below the committed length, so a writer killed
at any point leaves the store exactly as it was; the next append truncates the uncommitted tail.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dreamgen.errors import StoreError
from dreamgen.spaces import Cameras
from dreamgen.types import EPISODE_META, FRAME_KEYS, SCHEMA_VERSION, Episode

log = logging.getLogger(__name__)

FORMAT = "dreamgen.TrajectoryStore"
CHUNK_FRAMES = 8192
CHUNK_EPISODES = 4096


def _np_dtype(name: str) -> Any:
    return str if name == "str" else np.dtype(name)


def _codecs() -> list[Any]:
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0), Crc32cCodec()]


@contextmanager
def writer_lock(path: str | Path) -> Iterator[None]:
    """Hold the one-writer lock of the store at ``path`` (``.<name>.lock`` beside it, an OS file lock that
    dies with its process), or refuse at once, naming the process that holds it: two writers appending to
    one store would interleave their commits."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot take its writer lock {lock} ({exc.strerror})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StoreError(f"{path} is being written by another dreamgen process (pid {holder}); wait for it to "
                             "finish (the same command then resumes from what it committed), or give another "
                             "store") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _writing() -> Any:
    """zarr config for every write: keep all-fill chunks on disk, so a missing chunk always means damage."""
    import zarr

    return zarr.config.set({"array.write_empty_chunks": True})


class TrajectoryStore:
    """A zarr-backed store of whole episodes. Open with ``create`` or ``open``; never half-written."""

    def __init__(self, path: Path, group: Any):
        self.path = path
        self._group = group
        attrs = dict(group.attrs)
        self.obs_dim = int(attrs["obs_dim"])
        self.action_dim = int(attrs["action_dim"])
        self.cameras = Cameras.from_json(attrs.get("cameras"))  # None: a state store
        self.safety = attrs.get("safety")  # None: no safety labels; else {"events": [...], thresholds}
        self.events: tuple[str, ...] = tuple(self.safety["events"]) if self.safety else ()
        self.frame_keys = [*FRAME_KEYS, *(["images"] if self.cameras else []), *(["unsafe"] if self.events else [])]
        self._swept = False  # leftover *.partial files of a killed writer are removed once per handle
        self._digest: tuple[tuple[int, int], str] | None = None  # (committed lengths, digest)
        self._arrays: dict[str, Any] = {}  # array handles of this writer (opening one costs ~1 ms)

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | Path, *, obs_dim: int, action_dim: int,
               info: dict[str, Any] | None = None, cameras: Cameras | None = None,
               safety: dict[str, Any] | None = None) -> TrajectoryStore:
        """Create an empty store at ``path`` (which must not exist); with ``cameras``, an image store; with
        ``safety`` (``SafetySpec.describe()``), one whose frames carry the safety events ``unsafe``."""
        import zarr

        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: already exists; a new store needs a fresh path")
        # built beside its final path and renamed into place: a reader never sees a half-created store
        building = path.with_name(f".{path.name}.creating-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        group = zarr.open_group(str(building), mode="w-", zarr_format=3)
        data = group.create_group("data")
        meta = group.create_group("meta")
        shapes = {"obs": (obs_dim,), "action": (action_dim,)}
        for key, dtype in FRAME_KEYS.items():
            tail = shapes.get(key, ())
            data.create_array(key, shape=(0, *tail), chunks=(CHUNK_FRAMES, *tail), dtype=dtype,
                              compressors=_codecs())
        if cameras is not None:  # one chunk per frame: reading one frame decodes one frame
            data.create_array("images", shape=(0, *cameras.shape), chunks=(1, *cameras.shape), dtype="uint8",
                              compressors=_codecs())
        if safety is not None:
            events = len(safety["events"])
            data.create_array("unsafe", shape=(0, events), chunks=(CHUNK_FRAMES, events), dtype="bool",
                              compressors=_codecs())
        meta.create_array("episode_ends", shape=(0,), chunks=(CHUNK_EPISODES,), dtype="int64",
                          compressors=_codecs())
        for key, (dtype, _) in EPISODE_META.items():
            meta.create_array(key, shape=(0,), chunks=(CHUNK_EPISODES,), dtype=_np_dtype(dtype),
                              compressors=_codecs())
        group.update_attributes({
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "obs_dim": int(obs_dim),
            "action_dim": int(action_dim), "n_episodes": 0, "n_frames": 0, "info": info or {},
            **({"cameras": cameras.to_json()} if cameras is not None else {}),
            **({"safety": safety} if safety is not None else {}),
        })
        try:
            building.rename(path)
        except OSError as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise StoreError(f"{path}: could not be created ({exc})") from exc
        group = zarr.open_group(str(path), mode="r+", zarr_format=3)
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, *, mode: Literal["r", "r+"] = "r") -> TrajectoryStore:
        """Open an existing store (``mode`` "r" or "r+"), checking that it is one of ours and current."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a trajectory store (no zarr.json); create one with "
                             "`dreamgen collect` or give the path of an existing store")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
            attrs = dict(group.attrs)
        except Exception as exc:  # zarr raises many types for a damaged store
            raise StoreError(f"{path}: unreadable zarr store ({type(exc).__name__}: {exc})") from exc
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{path}: a zarr group but not a dreamgen trajectory store "
                             f"(attribute format={attrs.get('format')!r}, expected {FORMAT!r})")
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema_version {attrs.get('schema_version')!r} is not supported "
                             f"(this dreamgen reads schema_version {SCHEMA_VERSION}); re-create it with "
                             "`dreamgen collect` (or `generate`) in a new run_dir")
        for key, low in (("obs_dim", 1), ("action_dim", 1), ("n_episodes", 0), ("n_frames", 0)):
            value = attrs.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise StoreError(f"{path}/zarr.json: attribute {key}={value!r} is not an integer >= {low}; the "
                                 "store's header is damaged: restore it from a copy or re-create the store")
        try:
            Cameras.from_json(attrs.get("cameras"))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{path}/zarr.json: attribute cameras={attrs.get('cameras')!r} is not a camera "
                             "description ({names, height, width}); restore the store from a copy") from exc
        safety = attrs.get("safety")
        if safety is not None and not (isinstance(safety, dict) and isinstance(safety.get("events"), list)
                                       and all(isinstance(e, str) for e in safety["events"]) and safety["events"]):
            raise StoreError(f"{path}/zarr.json: attribute safety={safety!r} is not a safety description "
                             "({events: [names], thresholds}); restore the store from a copy")
        store = cls(path, group)
        store._check_layout()
        return store

    def _check_layout(self) -> None:
        n_episodes, n_frames = self._committed()
        try:
            arrays = {f"data/{k}": self._group[f"data/{k}"] for k in self.frame_keys}
            arrays.update({f"meta/{k}": self._group[f"meta/{k}"] for k in [*EPISODE_META, "episode_ends"]})
        except KeyError as exc:
            raise StoreError(f"{self.path}: damaged store, array {exc} is missing") from exc
        for key, dim in (("obs", self.obs_dim), ("action", self.action_dim)):
            if arrays[f"data/{key}"].shape[1:] != (dim,):
                raise StoreError(f"{self.path}: damaged store, zarr.json says {key}_dim={dim} but data/{key} holds "
                                 f"rows of shape {arrays[f'data/{key}'].shape[1:]}; restore it from a copy")
        if self.events and arrays["data/unsafe"].shape[1:] != (len(self.events),):
            raise StoreError(f"{self.path}: damaged store, zarr.json names {len(self.events)} safety events but "
                             f"data/unsafe holds rows of shape {arrays['data/unsafe'].shape[1:]}; restore it from a copy")
        for name, array in arrays.items():
            need = n_frames if name.startswith("data/") else n_episodes
            if array.shape[0] < need:
                raise StoreError(f"{self.path}: damaged store, {name} holds {array.shape[0]} rows "
                                 f"but {need} are committed")
            if not any(type(c).__name__ == "Crc32cCodec" for c in array.metadata.codecs):
                raise StoreError(f"{self.path}: {name} carries no chunk checksums (written by another "
                                 "tool?); re-create the store with `dreamgen collect` or `generate`")
            rows = array.chunks[0]
            for chunk in range(-(-need // rows)):
                key = array.metadata.encode_chunk_key((chunk, *[0] * (array.ndim - 1)))
                file = self.path / name / key
                if not file.is_file() or file.stat().st_size == 0:
                    lo, hi = chunk * rows, min((chunk + 1) * rows, need)
                    raise StoreError(f"{self.path}: damaged store, chunk {name}/{key} is missing or empty "
                                     f"({self._rows_to_episodes(name, lo, hi)}); nothing was read. Restore "
                                     "the store from a copy or re-create it")

    def _rows_to_episodes(self, name: str, lo: int, hi: int) -> str:
        """Which committed episodes rows ``[lo, hi)`` of array ``name`` belong to, in words."""
        try:
            if name.startswith("data/"):
                ends = np.asarray(self._group["meta/episode_ends"][:self._committed()[0]], np.int64)
                lo, hi = int(np.searchsorted(ends, lo, side="right")), int(np.searchsorted(ends, hi - 1, side="right")) + 1
            return f"episodes {lo}..{hi - 1}"
        except Exception:  # the episode index itself is damaged
            return f"rows {lo}..{hi - 1}"

    def _read(self, name: str, selection: Any = slice(None), *, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """``name[selection]`` as numpy; a chunk that fails its checksum or does not decode is a
        ``StoreError`` naming the store, the array and the episodes (rows ``[lo, hi)``) it holds."""
        try:
            return np.asarray(self._group[name][selection])
        except Exception as exc:  # zarr raises ValueError (checksum), codec errors, ... for a damaged chunk
            hi = hi if hi is not None else self._committed()[0 if name.startswith("meta/") else 1]
            lo, hi = self._damaged_rows(name, lo, hi)
            span = self._rows_to_episodes(name, lo, hi)
            raise StoreError(f"{self.path}: damaged store, {name} does not read back ({span}): "
                             f"{type(exc).__name__}: {str(exc).rstrip('.')}. Restore the store from a copy or re-create it") from exc

    def _damaged_rows(self, name: str, lo: int, hi: int) -> tuple[int, int]:
        """The rows of the first chunk in ``[lo, hi)`` of ``name`` that does not read back (else ``(lo, hi)``)."""
        rows = self._group[name].chunks[0]
        for start in range(lo - lo % rows, hi, rows):
            first, last = max(start, lo), min(start + rows, hi)
            try:
                self._group[name][first:last]
            except Exception:
                return first, last
        return lo, hi

    # ------------------------------------------------------------------ reading
    def _committed(self) -> tuple[int, int]:
        attrs = self._group.attrs
        return int(attrs["n_episodes"]), int(attrs["n_frames"])

    def __len__(self) -> int:
        return self._committed()[0]

    @property
    def n_frames(self) -> int:
        return self._committed()[1]

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._group.attrs.get("info", {}))

    def episode_ends(self) -> np.ndarray:
        n_episodes, _ = self._committed()
        return self._read("meta/episode_ends", slice(0, n_episodes), hi=n_episodes).astype(np.int64)

    def meta(self, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per-episode metadata columns (strings as ``object`` arrays), committed episodes only."""
        n_episodes, _ = self._committed()
        out = {}
        for key in fields or EPISODE_META:
            column = self._read(f"meta/{key}", slice(0, n_episodes), hi=n_episodes) if n_episodes else np.zeros(0)
            out[key] = (np.asarray(column).astype(object) if EPISODE_META[key][0] == "str"
                        else np.asarray(column, dtype=EPISODE_META[key][0]))
        return out

    def iter_episodes(self, start: int = 0, stop: int | None = None, *,
                      batch_frames: int | None = None, images: bool = True) -> Iterator[Episode]:
        """Stream episodes ``[start, stop)``, reading about ``batch_frames`` frames at a time (default: 65536,
        or 1024 with images). ``images=False`` skips an image store's frames (``Episode.images`` is None)."""
        keys = [k for k in self.frame_keys if images or k != "images"]
        batch_frames = batch_frames or (1024 if "images" in keys else 65536)
        ends = self.episode_ends()
        stop = len(ends) if stop is None else min(stop, len(ends))
        meta = self.meta()
        index = start
        while index < stop:
            first = int(ends[index - 1]) if index > 0 else 0
            last_index = int(np.searchsorted(ends, first + batch_frames, side="right"))
            last_index = min(max(last_index, index + 1), stop)
            last = int(ends[last_index - 1])
            frames = {k: self._read(f"data/{k}", slice(first, last), lo=first, hi=last) for k in keys}
            for i in range(index, last_index):
                lo, hi = (int(ends[i - 1]) if i > 0 else 0) - first, int(ends[i]) - first
                yield Episode(**{k: v[lo:hi] for k, v in frames.items()},
                              meta={k: _py(meta[k][i]) for k in meta})
            index = last_index

    def first_frames(self, key: str, episodes: np.ndarray) -> np.ndarray:
        """``data/<key>`` at the first frame of each of ``episodes`` (indices of committed episodes)."""
        episodes = np.asarray(episodes, dtype=np.int64)
        array = self._group[f"data/{key}"]
        if not len(episodes):
            return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
        starts = np.concatenate([[0], self.episode_ends()[:-1]])[episodes]
        try:
            return np.asarray(array.get_orthogonal_selection((starts, *[slice(None)] * (array.ndim - 1))))
        except Exception:  # name the damage: read the whole span through the checked reader
            self._read(f"data/{key}", slice(0, self.n_frames), hi=self.n_frames)
            raise

    def episode(self, index: int, *, images: bool = True) -> Episode:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: episode {index} out of range [0, {len(self)})")
        return next(self.iter_episodes(index, index + 1, images=images))

    def digest(self) -> str:
        """Content fingerprint of the committed episodes (ids, lengths, frame data), 16 hex chars.

        Reads every frame once per committed state; repeated calls on one handle are free.
        """
        committed = self._committed()
        if self._digest is not None and self._digest[0] == committed:
            return self._digest[1]
        h = hashlib.sha256()
        h.update(self.episode_ends().tobytes())
        h.update("\n".join(self.meta(["episode_id"])["episode_id"]).encode())
        n_frames = self.n_frames
        for key in self.frame_keys:
            for lo in range(0, n_frames, 4096):  # images: bounded memory
                hi = min(lo + 4096, n_frames)
                h.update(np.ascontiguousarray(self._read(f"data/{key}", slice(lo, hi), lo=lo, hi=hi)).tobytes())
        self._digest = (committed, h.hexdigest()[:16])
        return self._digest[1]

    # ------------------------------------------------------------------ writing
    def validate(self, episodes: Sequence[Episode]) -> None:
        """Raise ``StoreError`` naming the episode and key for any shape, dtype or non-finite problem."""
        for number, episode in enumerate(episodes):
            name = f"episode {number} ({episode.meta.get('episode_id', 'no id')})"
            lengths = {key: len(np.asarray(getattr(episode, key))) for key in FRAME_KEYS}
            if len(set(lengths.values())) != 1:
                raise StoreError(f"{self.path}: {name}: frame arrays differ in length {lengths}; "
                                 "every per-frame array needs one row per frame")
            length = len(episode)
            if length < 1:
                raise StoreError(f"{self.path}: {name} is empty; an episode needs at least one frame")
            want = {"obs": (length, self.obs_dim), "action": (length, self.action_dim)}
            for key, dtype in FRAME_KEYS.items():
                value = np.asarray(getattr(episode, key))
                shape = want.get(key, (length,))
                if value.shape != shape:
                    raise StoreError(f"{self.path}: {name}: {key} has shape {value.shape}, "
                                     f"expected {shape}")
                if dtype == "bool" and value.dtype != np.bool_:
                    raise StoreError(f"{self.path}: {name}: {key} has dtype {value.dtype}, expected bool")
                if dtype != "bool" and not np.issubdtype(value.dtype, np.number):
                    raise StoreError(f"{self.path}: {name}: {key} has dtype {value.dtype}, expected numbers")
                if dtype != "bool" and not np.all(np.isfinite(value)):
                    bad = int(np.argwhere(~np.isfinite(value.reshape(length, -1)))[0, 0])
                    raise StoreError(f"{self.path}: {name}: {key} is not finite (NaN/inf) at frame {bad}; "
                                     "nothing was written")
            self._check_extras(name, episode, length)
            unknown = set(episode.meta) - set(EPISODE_META)
            if unknown:
                raise StoreError(f"{self.path}: {name}: unknown metadata {sorted(unknown)}; "
                                 f"known: {', '.join(EPISODE_META)}")

    def _check_extras(self, name: str, episode: Episode, length: int) -> None:
        """The frame arrays only some stores hold: an image store's images, a labelled store's safety events."""
        if self.cameras is not None:
            got = _mismatch(episode.images, (length, *self.cameras.shape), np.uint8)
            if got:
                raise StoreError(f"{self.path}: {name}: images are {got}; this image store needs uint8 "
                                 f"{[length, *self.cameras.shape]} (cameras {self.cameras.describe()})")
        elif episode.images is not None:
            raise StoreError(f"{self.path}: {name} carries images, but this is a state store (no cameras); "
                             "write it to an image store")
        if self.events:
            got = _mismatch(episode.unsafe, (length, len(self.events)), np.bool_)
            if got:
                raise StoreError(f"{self.path}: {name}: its safety labels are {got}; this store needs bool "
                                 f"{[length, len(self.events)]} (events {', '.join(self.events)})")
        elif episode.unsafe is not None:
            raise StoreError(f"{self.path}: {name} carries safety labels, but this store has none; write it "
                             "to a store created with safety events, or drop its labels")

    def append(self, episodes: Iterable[Episode]) -> int:
        """Append whole episodes atomically (all or none); return how many were committed."""
        episodes = list(episodes)
        if not episodes:
            return 0
        self.validate(episodes)
        try:
            with _writing():
                return self._append(episodes)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise
            raise StoreError(f"{self.path}: {exc.strerror} while appending {len(episodes)} episodes; the store keeps "
                             f"its {len(self)} committed episodes (nothing of this append counts). Free space under "
                             f"{self.path.parent} (or give another store) and rerun to resume") from exc

    def _append(self, episodes: list[Episode]) -> int:
        n_episodes, n_frames = self._committed()
        self._truncate(n_episodes, n_frames)
        lengths = np.array([len(e) for e in episodes], dtype=np.int64)
        for key, dtype in FRAME_KEYS.items():
            rows = np.concatenate([np.asarray(getattr(e, key)).astype(dtype) for e in episodes])
            self._array(f"data/{key}").append(rows, axis=0)
        if self.cameras is not None:
            self._array("data/images").append(np.concatenate([e.images for e in episodes]), axis=0)  # type: ignore[misc]
        if self.events:
            self._array("data/unsafe").append(np.concatenate([e.unsafe for e in episodes]), axis=0)  # type: ignore[misc]
        self._array("meta/episode_ends").append(n_frames + np.cumsum(lengths))
        metas = [e.full_meta() for e in episodes]
        for key, (dtype, _) in EPISODE_META.items():
            column = [m[key] for m in metas]
            self._array(f"meta/{key}").append(
                np.array([str(v) for v in column]) if dtype == "str" else np.array(column, dtype=dtype))
        # The commit: one atomic rewrite of the root zarr.json holding both counts. (Not ``attrs.update``:
        # that is MutableMapping.update, one file write per key — a kill between them tore the commit.)
        self._group.update_attributes({"n_episodes": n_episodes + len(episodes),
                                       "n_frames": n_frames + int(lengths.sum())})
        return len(episodes)

    def _array(self, name: str) -> Any:
        """A cached handle for writing; this handle is the store's only writer, so its shapes stay current."""
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def _truncate(self, n_episodes: int, n_frames: int) -> None:
        """Drop rows a killed writer left past the committed length."""
        for key in self.frame_keys:
            array = self._array(f"data/{key}")
            if array.shape[0] != n_frames:
                log.warning("%s: dropping %d uncommitted frames of data/%s", self.path,
                            array.shape[0] - n_frames, key)
                array.resize((n_frames, *array.shape[1:]))
        for key in ["episode_ends", *EPISODE_META]:
            array = self._array(f"meta/{key}")
            if array.shape[0] != n_episodes:
                array.resize((n_episodes,))
        if not self._swept:
            for partial in self.path.rglob("*.partial"):
                partial.unlink(missing_ok=True)
            self._swept = True

    def update_meta(self, field: str, values: np.ndarray | Sequence[Any]) -> None:
        """Overwrite one metadata column for all committed episodes (e.g. filter verdicts)."""
        if field not in EPISODE_META or field in ("episode_id", "source"):
            raise StoreError(f"{self.path}: metadata field {field!r} cannot be updated")
        n_episodes, _ = self._committed()
        if len(values) != n_episodes:
            raise StoreError(f"{self.path}: {field} needs {n_episodes} values, got {len(values)}")
        dtype = EPISODE_META[field][0]
        array = np.array([str(v) for v in values]) if dtype == "str" else np.asarray(values, dtype=dtype)
        with _writing():
            self._group[f"meta/{field}"][:n_episodes] = array

    def meta_digest(self, fields: Sequence[str]) -> str:
        """Fingerprint of metadata columns (e.g. the filter's verdicts), 16 hex chars."""
        h = hashlib.sha256()
        for key, column in self.meta(fields).items():
            h.update(key.encode() + b"\0" + "\n".join(map(str, column.tolist())).encode())
        return h.hexdigest()[:16]

    def set_info(self, key: str, value: Any) -> None:
        """Set one entry of the store's free-form ``info`` (one atomic root-attribute write)."""
        info = self.info
        info[key] = value
        self._group.update_attributes({"info": info})


def _mismatch(value: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> str:
    """What an optional frame array is, in words ("none", "float32[3, 2]"), where it is not ``dtype`` ``shape``;
    "" where it is."""
    if value is None:
        return "none"
    value = np.asarray(value)
    return "" if value.shape == shape and value.dtype == dtype else f"{value.dtype}{list(value.shape)}"


def _py(value: Any) -> Any:
    """numpy scalar -> plain Python value (for metadata dicts)."""
    return value.item() if hasattr(value, "item") else value

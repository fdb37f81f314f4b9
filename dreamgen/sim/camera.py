"""Cameras: what a pixel store and a pixel world model see, and how the real simulator renders it.

``Cameras(names, height, width)`` (``dreamgen.spaces``) is recorded in every image store and pixel
checkpoint; a store and a checkpoint that disagree are refused by name (``check_same``). ``MujocoCameras(env, cameras)`` renders a
MuJoCo env's named cameras offscreen into ``uint8 [C, H, W, 3]``: EGL with Mesa's software rasteriser on
a CPU machine (``MUJOCO_GL=egl EGL_PLATFORM=surfaceless``, set in ``dreamgen.sim`` before MuJoCo loads),
with shadows and reflections off (5x faster on the software rasteriser; they carry no state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.spaces import Cameras

SIZE_STEP = 16  # the latent model's encoder halves the image four times


def cameras_from_config(names: Sequence[str] | None, size: int, available: Sequence[str],
                        robot: str) -> Cameras | None:
    """``camera.names`` / ``camera.size`` checked against the embodiment's cameras (empty names: no images)."""
    names = [str(n) for n in (names or [])]
    if not names:
        return None
    for name in names:
        if name not in available:
            raise ConfigError(f"camera.names: {name!r} is not a camera of embodiment {robot}; its cameras: "
                              f"{', '.join(available) or 'none'}")
    if len(set(names)) != len(names):
        raise ConfigError(f"camera.names lists a camera twice: {names}")
    if not isinstance(size, int) or size < SIZE_STEP or size % SIZE_STEP or size > 256:
        raise ConfigError(f"camera.size={size!r}; must be a multiple of {SIZE_STEP} in [{SIZE_STEP}, 256] "
                          "(the encoder halves the image four times)")
    return Cameras(tuple(names), size, size)


class MujocoCameras:
    """Offscreen renders of a MuJoCo-backed gymnasium env's named cameras. ``flip``: the cameras whose
    image MuJoCo returns upside down (Meta-World's corner cameras look up from below the table)."""

    def __init__(self, env: Any, cameras: Cameras, *, flip: Sequence[str] = ()):
        import mujoco

        raw = env.unwrapped
        self.model, self.data, self.cameras = raw.model, raw.data, cameras
        self._renderer = mujoco.Renderer(self.model, cameras.height, cameras.width)
        self._flags = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION)
        self._flip = {name: name in flip for name in cameras.names}

    def __call__(self) -> np.ndarray:
        """The current frame of every camera: ``uint8 [C, H, W, 3]``."""
        frames = []
        for name in self.cameras.names:
            self._renderer.update_scene(self.data, camera=name)
            for flag in self._flags:  # per update_scene: the scene's flags are reset from the model's
                self._renderer.scene.flags[flag] = 0
            image = self._renderer.render()
            frames.append(image[::-1] if self._flip[name] else image)
        return np.stack(frames).astype(np.uint8, copy=False)

    def close(self) -> None:
        self._renderer.close()

"""The "real world": the embodiments dreamgen collects demonstrations in and evaluates policies on
(``base.py``: the contract; ``metaworld.py``, ``fetch.py``: simulators; ``data.py``: a robot known from its
data; ``camera.py``: offscreen cameras)."""

import os

# MuJoCo picks its GL backend when it is first imported: EGL (a GPU's, or Mesa's software rasteriser on a
# CPU machine) renders offscreen without a display. Set here, before any simulator module imports MuJoCo.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")

LEGACY = "metaworld"  # the embodiment of every store, checkpoint and run made before embodiments were recorded

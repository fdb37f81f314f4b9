"""The "real world": the embodiments dreamgen collects demonstrations in and evaluates policies on
(``base.py``: the contract; ``metaworld.py``, ``fetch.py``: simulators; ``data.py``: a robot known from its data)."""

LEGACY = "metaworld"  # the embodiment of every store, checkpoint and run made before embodiments were recorded

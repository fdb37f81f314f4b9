"""gymnasium-robotics' Fetch arm as a second real world (the ``fetch`` embodiment, ``FETCH``).

Three goal-conditioned MuJoCo tasks — FetchReach, FetchPush, FetchPickAndPlace (v4) — flattened to one
22-dim state so a single world model serves all of them:

    0:3 gripper xyz | 3:6 object xyz | 6:9 object − gripper | 9:11 finger widths
    11:14 object linear velocity | 14:17 gripper velocity | 17:19 finger velocities | 19:22 goal xyz

The block's orientation and angular velocity (Fetch's observation 11:14 and 17:20) are left out: the
Euler angles wrap at ±π (one-step changes of up to 5.6 rad in the collected data, which dominated the
world model's error), and no task's success depends on them. FetchReach has no object: its 10-dim
observation fills the gripper and finger slots and the object slots stay 0. Velocities are part of the
state, so the layout carries no previous frame; the goal is static.
``reset(seed=s)`` reproduces layout ``s`` (the env's own generator is seeded); ``info["success"]`` is the
env's ``is_success``. Actions: gripper Δxyz (× 5 cm) and the fingers (+1 open, −1 close), in [-1, 1].

The scripted experts are small state machines on the flattened state (no hidden state: each action is a
function of the observation), written here for collection and the oracle sampler.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dreamgen.safety import SafetyDefaults
from dreamgen.sim.base import Embodiment, Expert, GoalRule, TaskSpec
from dreamgen.spaces import ObsLayout

OBS_DIM = 22
ACTION_DIM = 4
MAX_EPISODE_STEPS = 100  # the gymnasium-robotics default is 50; room for slower policies
DEFAULT_STEPS = 50
FETCH_LAYOUT = ObsLayout("fetch-v4-state", OBS_DIM, dynamic=(0, 19), static=(19, 22))
GRIP, OBJECT, FINGERS, GOAL = slice(0, 3), slice(3, 6), slice(9, 11), slice(19, 22)
# Fetch's 25-dim observation without the block's rotation (11:14) and angular velocity (17:20)
_KEPT = np.r_[0:11, 14:17, 20:25]
# where FetchReach's 10-dim observation goes: gripper xyz, fingers, gripper velocity, finger velocities
_REACH_SLOTS = np.r_[0:3, 9:11, 14:17, 17:19]

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("FetchReach-v4", ("move the gripper to the target", "reach the target position with the gripper",
                                   "bring the gripper to the red target"), has_object=False),
        TaskSpec("FetchPush-v4", ("push the block to the target", "slide the cube across the table to the target",
                                  "shove the block onto the red target")),
        TaskSpec("FetchPickAndPlace-v4", ("pick up the block and place it at the target",
                                          "grasp the cube and put it on the target",
                                          "lift the block and carry it to the target")),
    )
}


class FlatFetch(gym.Wrapper):
    """A Fetch env with the flat 22-dim float32 state, ``info["success"]`` and ``info["layout_seed"]``."""

    def __init__(self, env: gym.Env, reach: bool):
        super().__init__(env)
        self.reach = reach
        low = np.full(OBS_DIM, -np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(low, -low, dtype=np.float32)
        self._seed_rng = np.random.default_rng()

    def flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(OBS_DIM, np.float32)
        if self.reach:
            out[_REACH_SLOTS] = obs["observation"]
        else:
            out[:19] = obs["observation"][_KEPT]
        out[GOAL] = obs["desired_goal"]
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        obs, info = self.env.reset(seed=int(seed), options=options)
        info["layout_seed"] = int(seed)
        return self.flat(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        info["success"] = bool(info.get("is_success", 0.0) > 0.5)
        return self.flat(obs), float(reward), terminated, truncated, info


def make_env(task: str, *, max_episode_steps: int = DEFAULT_STEPS, **render: Any) -> gym.Env:
    """A single Fetch env for ``task`` (``FetchReach-v4`` | ``FetchPush-v4`` | ``FetchPickAndPlace-v4``)."""
    import gymnasium_robotics

    FETCH.check_tasks([task], field="task")
    gym.register_envs(gymnasium_robotics)
    return FlatFetch(gym.make(task, max_episode_steps=max_episode_steps, **render), reach=task == "FetchReach-v4")


def _toward(target: np.ndarray, grip: np.ndarray, fingers: float, gain: float = 10.0) -> np.ndarray:
    return np.append(np.clip(gain * (target - grip), -1.0, 1.0), fingers).astype(np.float32)


def reach_expert(obs: np.ndarray) -> np.ndarray:
    return _toward(obs[GOAL], obs[GRIP], 0.0)


def push_expert(obs: np.ndarray) -> np.ndarray:
    """Up and over to the point behind the block (seen from the goal), down to the table, then push."""
    grip, block, goal = obs[GRIP], obs[OBJECT], obs[GOAL]
    line = goal[:2] - block[:2]
    direction = line / max(np.linalg.norm(line), 1e-6)
    behind = np.append(block[:2] - 0.06 * direction, block[2])
    if np.linalg.norm(grip[:2] - behind[:2]) > 0.02:  # not behind it yet: travel above the block's height
        return _toward(np.append(behind[:2], block[2] + 0.08), grip, -1.0)
    if grip[2] > block[2] + 0.01:
        return _toward(behind, grip, -1.0)
    return _toward(np.append(goal[:2] - 0.045 * direction, block[2]), grip, -1.0, gain=6.0)


def pick_place_expert(obs: np.ndarray) -> np.ndarray:
    """Open above the block, down around it, close, then carry it to the goal closed."""
    grip, block, goal, width = obs[GRIP], obs[OBJECT], obs[GOAL], float(obs[FINGERS].sum())
    if np.linalg.norm(block - grip) > 0.02:  # not around the block
        if np.linalg.norm(block[:2] - grip[:2]) > 0.01:
            return _toward(block + np.array([0.0, 0.0, 0.06]), grip, 1.0)
        return _toward(block, grip, 1.0)
    if width > 0.06:  # around the block, fingers still open: close them
        return np.array([0.0, 0.0, 0.0, -1.0], np.float32)
    return _toward(goal, grip, -1.0)


EXPERTS: dict[str, Expert] = {"FetchReach-v4": reach_expert, "FetchPush-v4": push_expert,
                              "FetchPickAndPlace-v4": pick_place_expert}
# gymnasium-robotics' is_success: |achieved_goal - desired_goal| < distance_threshold (0.05 in all three), where the
# achieved goal is the gripper (reach) or the block (push, pick-and-place)
SUCCESS_PARTS: dict[str, slice] = {"FetchReach-v4": GRIP, "FetchPush-v4": OBJECT, "FetchPickAndPlace-v4": OBJECT}
DISTANCE_THRESHOLD = 0.05


class Fetch(Embodiment):
    """The Fetch mobile manipulator's arm (gymnasium-robotics): 22-dim state, 4-dim action."""

    name = "fetch"
    layout = FETCH_LAYOUT
    action_dim = ACTION_DIM
    max_steps = MAX_EPISODE_STEPS
    fps = 25  # 20 MuJoCo substeps of 2 ms
    robot_type = "fetch"
    tasks = TASKS
    parts = {"hand": GRIP, "object": OBJECT, "goal": GOAL}
    # The table top is z ≈ 0.42 (a block rests at 0.425); the scripted experts' grippers stay in x 1.17-1.52,
    # y 0.56-0.90, z 0.41-0.80. Fetch's mocap presses hard: the reach expert touches the table at up to
    # 1.7 kN, a gripper driven down at 9-14 kN, so a strike is a contact above 2.5 kN.
    safety = SafetyDefaults(workspace_low=(1.0, 0.4, 0.38), workspace_high=(1.7, 1.1, 1.0),
                            object_min_z=0.35, table_force_n=2500.0)
    robot_bodies = ("robot0:",)
    table_bodies = ("table0",)

    def make_env(self, task: str, *, max_episode_steps: int | None = None, **render: Any) -> gym.Env:
        return make_env(task, max_episode_steps=max_episode_steps or DEFAULT_STEPS, **render)

    def make_expert(self, task: str) -> Expert:
        self.check_tasks([task], field="task")
        return EXPERTS[task]

    def goal_rule(self, task: str) -> GoalRule | None:
        if task not in SUCCESS_PARTS:
            return None
        part = SUCCESS_PARTS[task]
        return GoalRule(part, GOAL, DISTANCE_THRESHOLD, inclusive=False, hand=None if part == GRIP else GRIP)


FETCH = Fetch()

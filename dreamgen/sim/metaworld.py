"""Meta-World v3 as dreamgen's real world (the ``metaworld`` embodiment, ``METAWORLD``): env factory,
task ↔ instruction table, scripted experts, the 39-dim state layout.

``make_env(task)`` returns a gymnasium env whose ``reset(seed=s)`` reproduces the exact object and
goal layout of seed ``s`` (Meta-World 3.x otherwise freezes one layout per task, or draws from 50
pre-sampled ones through its MT1 wrapper). The goal is observable: obs[36:39] is the goal xyz.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from dreamgen.safety import SafetyDefaults
from dreamgen.sim.base import Embodiment, Expert, GoalRule, TaskSpec
from dreamgen.sim.camera import MujocoCameras
from dreamgen.spaces import Cameras, ObsLayout

OBS_DIM = 39
ACTION_DIM = 4
MAX_EPISODE_STEPS = 500  # Meta-World's own limit
HAND_SLICE = slice(0, 3)
OBJECT_SLICE = slice(4, 7)
GOAL_SLICE = slice(36, 39)
# 18 current dims (hand, gripper, 2 object poses), the same 18 one step earlier, 3 goal dims
CAMERAS = ("corner3", "corner", "corner2", "corner4", "topview", "behindGripper", "gripperPOV")
METAWORLD_LAYOUT = ObsLayout("metaworld-v3-state", OBS_DIM, dynamic=(0, 18), history=(18, 36), static=(36, 39))


def _spec(name: str, polarity: str, *instructions: str) -> TaskSpec:
    return TaskSpec(name, tuple(instructions), polarity)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec("reach-v3", "", "reach the goal", "move the gripper to the target point",
              "reach out to the target position", "bring the hand to the goal"),
        _spec("push-v3", "", "push the puck to the goal", "slide the puck across the table to the target",
              "push the block to the target location", "nudge the puck onto the goal"),
        _spec("pick-place-v3", "", "pick up the puck and place it at the goal",
              "grasp the object and put it on the target", "pick and place the block",
              "lift the puck and move it to the goal position"),
        _spec("door-open-v3", "open", "open the door", "pull the door open", "swing the door open",
              "grab the handle and open the door"),
        _spec("door-close-v3", "close", "close the door", "push the door closed", "shut the door",
              "swing the door shut"),
        _spec("drawer-open-v3", "open", "open the drawer", "pull the drawer open",
              "pull the drawer out", "slide the drawer open"),
        _spec("drawer-close-v3", "close", "close the drawer", "push the drawer closed",
              "shut the drawer", "slide the drawer shut"),
        _spec("button-press-topdown-v3", "", "press the button from the top",
              "push the button down from above", "press down on the button",
              "hit the button from above"),
        _spec("window-open-v3", "open", "open the window", "slide the window open",
              "push the window open sideways"),
        _spec("window-close-v3", "close", "close the window", "slide the window closed",
              "shut the window"),
        _spec("faucet-open-v3", "open", "turn the faucet on", "open the faucet",
              "rotate the faucet handle to open it"),
        _spec("faucet-close-v3", "close", "turn the faucet off", "close the faucet",
              "rotate the faucet handle to close it"),
        _spec("handle-press-v3", "", "press the handle down", "push the handle downwards",
              "press down on the lever handle"),
        _spec("plate-slide-v3", "", "slide the plate into the goal", "push the plate into the net",
              "slide the plate forward into the target"),
        _spec("coffee-button-v3", "", "press the coffee machine button",
              "push the button on the coffee machine", "start the coffee machine"),
        # the other 35 of Meta-World's 50 v3 tasks (each with its shipped scripted expert): many are where 5 demos
        # are short (assembly, hammer, peg-insert-side, shelf-place, ...)
        _spec("assembly-v3", "", "put the nut on the peg", "pick up the ring and fit it over the peg",
              "assemble the nut onto the peg"),
        _spec("basketball-v3", "", "dunk the ball into the basket", "put the basketball through the hoop",
              "shoot the ball into the hoop"),
        _spec("bin-picking-v3", "", "move the puck from one bin to the other",
              "pick the cube from the bin and drop it into the other bin", "transfer the block between the bins"),
        _spec("box-close-v3", "close", "close the box with the lid", "shut the box", "place the lid over the box"),
        _spec("button-press-topdown-wall-v3", "", "press the button from the top behind the wall",
              "push the button down from above beside the wall", "press down on the button next to the wall"),
        _spec("button-press-v3", "", "press the button from the front", "push the button forward",
              "poke the button straight ahead"),
        _spec("button-press-wall-v3", "", "press the button from the front behind the wall",
              "push the button forward past the wall", "reach around the wall and press the button"),
        _spec("coffee-pull-v3", "", "pull the coffee mug back", "drag the mug away from the coffee machine",
              "pull the mug back from the coffee machine"),
        _spec("coffee-push-v3", "", "push the mug under the coffee machine", "slide the mug to the coffee machine",
              "push the coffee mug forward to the machine"),
        _spec("dial-turn-v3", "", "turn the dial", "rotate the dial", "spin the knob around"),
        _spec("disassemble-v3", "", "take the nut off the peg", "lift the ring up from the peg",
              "disassemble the nut from the peg"),
        _spec("door-lock-v3", "", "lock the door", "turn the door lock down", "lock the door by turning the knob"),
        _spec("door-unlock-v3", "", "unlock the door", "turn the door lock up",
              "unlock the door by turning the knob"),
        _spec("hammer-v3", "", "hammer the nail", "hit the nail with the hammer",
              "pick up the hammer and drive the nail"),
        _spec("hand-insert-v3", "", "insert the hand into the hole", "lower the gripper into the hole",
              "move the hand down into the hole"),
        _spec("handle-press-side-v3", "", "press the handle down from the side", "push the side handle downwards",
              "press down on the handle from the side"),
        _spec("handle-pull-side-v3", "", "pull the handle up from the side", "lift the side handle upwards",
              "pull up on the handle from the side"),
        _spec("handle-pull-v3", "", "pull the handle up", "lift the handle upwards", "pull up on the lever handle"),
        _spec("lever-pull-v3", "", "pull the lever up", "raise the lever", "pull the lever upwards"),
        _spec("peg-insert-side-v3", "", "insert the peg into the hole from the side",
              "push the peg sideways into the hole", "put the peg into the side hole"),
        _spec("peg-unplug-side-v3", "", "unplug the peg from the side", "pull the peg sideways from the hole",
              "remove the peg sideways"),
        _spec("pick-out-of-hole-v3", "", "pick the puck up from the hole", "lift the block up from the hole",
              "take the object up from the hole"),
        _spec("pick-place-wall-v3", "", "pick up the puck and place it at the goal over the wall",
              "lift the block over the wall onto the target", "pick and place the puck past the wall"),
        _spec("plate-slide-back-side-v3", "", "slide the plate back sideways into the goal",
              "push the plate backwards from the side into the net", "slide the plate sideways back to the target"),
        _spec("plate-slide-back-v3", "", "slide the plate back into the goal", "pull the plate backwards into the net",
              "slide the plate back to the target"),
        _spec("plate-slide-side-v3", "", "slide the plate sideways into the goal", "push the plate sideways into the net",
              "slide the plate to the side into the target"),
        _spec("push-back-v3", "", "push the puck back toward the robot", "draw the puck backwards to the goal",
              "slide the puck back toward the robot"),
        _spec("push-wall-v3", "", "push the puck around the wall to the goal",
              "slide the puck past the wall to the target", "push the block around the wall"),
        _spec("reach-wall-v3", "", "reach the goal over the wall", "move the gripper past the wall to the target",
              "reach over the wall to the target point"),
        _spec("shelf-place-v3", "", "place the puck on the shelf", "put the block onto the shelf",
              "pick up the puck and set it on the shelf"),
        _spec("soccer-v3", "", "kick the ball into the goal", "push the soccer ball into the net",
              "score a goal with the ball"),
        _spec("stick-pull-v3", "", "pull the box with the stick", "grab the stick and pull the container",
              "use the stick to drag the box back"),
        _spec("stick-push-v3", "", "push the box with the stick", "grab the stick and push the container",
              "use the stick to shove the box forward"),
        _spec("sweep-into-v3", "", "sweep the puck into the hole", "brush the block into the goal hole",
              "sweep the puck into the target"),
        _spec("sweep-v3", "", "sweep the puck off the table", "brush the block off the edge",
              "sweep the puck to the edge of the table"),
    )
}


# Meta-World v3's own success criteria (``evaluate_state``, reward version v2), for the tasks where it is the
# distance of one observed part to the observed goal: task -> (part, offset added to it, radius in m). Checked
# against the simulator's success flag on every frame of real episodes (tests/test_sim.py).
TCP_OFFSET = np.array([0.0, 0.0022, -0.045])  # the fingers' centre (tcp_center) from the observed hand, ±2 mm in y
SUCCESS_RULES: dict[str, tuple[slice, np.ndarray, float]] = {
    "reach-v3": (HAND_SLICE, TCP_OFFSET, 0.05),  # |tcp_center - target| <= 0.05
    "push-v3": (OBJECT_SLICE, np.zeros(3), 0.05),  # target_to_obj <= TARGET_RADIUS (0.05)
    "pick-place-v3": (OBJECT_SLICE, np.zeros(3), 0.07),  # obj_to_target <= 0.07
    "drawer-close-v3": (OBJECT_SLICE, np.zeros(3), 0.065),  # target_to_obj <= TARGET_RADIUS (0.05 at run time) + 0.015
}


def check_tasks(tasks: Iterable[str], *, field: str = "tasks") -> list[str]:
    """Return ``tasks`` as a list, or raise naming the first unknown one and the close matches."""
    return METAWORLD.check_tasks(tasks, field=field)


class SeededLayout(gym.Wrapper):
    """``reset(seed=s)`` re-seeds the Meta-World env itself, so the layout is a function of ``s``.

    Without a seed the next layout seed is drawn from the wrapper's generator. Either way the seed
    that produced the layout is returned as ``info["layout_seed"]``, so every episode can be replayed.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._seed_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        else:
            self._seed_rng = np.random.default_rng(seed)
        self.env.unwrapped.seed(int(seed))  # type: ignore[attr-defined]
        obs, info = self.env.reset(options=options)
        info["layout_seed"] = int(seed)
        return obs.astype(np.float32), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs.astype(np.float32), float(reward), terminated, truncated, info


def make_env(task: str, *, max_episode_steps: int = MAX_EPISODE_STEPS, render_mode: str | None = None,
             camera_name: str | None = None, width: int = 64, height: int = 64) -> gym.Env:
    """A single Meta-World v3 env for ``task`` with seeded, fresh layouts and an observable goal.

    Observation: ``Box(39,) float32``; action: ``Box(-1, 1, (4,))``. Episodes never terminate on
    success (as in Meta-World); they truncate at ``max_episode_steps``.
    """
    check_tasks([task], field="task")
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    raw = ALL_V3_ENVIRONMENTS[task](render_mode=render_mode, camera_name=camera_name,  # type: ignore[arg-type]
                                   width=width, height=height)
    raw._partially_observable = False  # the goal xyz is part of the observation ...
    raw.__dict__.pop("sawyer_observation_space", None)  # ... and not clipped to 0 by a cached space
    raw._freeze_rand_vec = False  # draw a fresh layout per reset ...
    raw.seeded_rand_vec = True  # ... from the env's own seeded generator
    raw._set_task_called = True
    raw.max_path_length = max_episode_steps
    env: gym.Env = SeededLayout(gym.wrappers.TimeLimit(raw, max_episode_steps=max_episode_steps))
    low = np.full(OBS_DIM, -np.inf, dtype=np.float32)
    env.observation_space = gym.spaces.Box(low, -low, dtype=np.float32)
    return env


def make_expert(task: str) -> Expert:
    """The shipped scripted expert for ``task``: ``obs[39] -> action[4]`` in [-1, 1]."""
    check_tasks([task], field="task")
    from metaworld.policies import ENV_POLICY_MAP

    policy = ENV_POLICY_MAP[task]()  # type: ignore[abstract]

    def act(obs: np.ndarray) -> np.ndarray:
        return np.clip(policy.get_action(np.asarray(obs, dtype=np.float64)), -1.0, 1.0).astype(np.float32)

    return act


def replay(task: str, seed: int, actions: Sequence[np.ndarray] | np.ndarray, *,
           env: gym.Env | None = None) -> dict[str, Any]:
    """Replay ``actions`` open-loop from the layout of ``seed``; report real success and observations.

    ``env``: a ``make_env(task)`` env to reuse (its limit must be at least ``len(actions)``); creating
    one costs more than a short replay.
    """
    return METAWORLD.replay(task, seed, actions, env=env)


class MetaWorld(Embodiment):
    """Meta-World v3's Sawyer arm: 39-dim state, 4-dim action (hand xyz + gripper), 500 steps."""

    name = "metaworld"
    layout = METAWORLD_LAYOUT
    action_dim = ACTION_DIM
    max_steps = MAX_EPISODE_STEPS
    fps = 80  # frame_skip 5 x 2.5 ms
    robot_type = "sawyer"
    tasks = TASKS
    parts = {"hand": HAND_SLICE, "object": OBJECT_SLICE, "goal": GOAL_SLICE}
    camera_names = CAMERAS
    # The box the scripted experts' hands stay in on the 15 tasks, with margin (their hands span x ±0.11,
    # y 0.48-0.89, z 0.05-0.38); the table top is z = 0 (a puck rests at z ≈ 0.02). No expert touches the
    # table; a hand driven down into it strikes at 10-36 N and then rests on it at 2-9 N, so a strike is a
    # contact above 5 N (docs/benchmarks.md, "Safety events").
    # the box every scripted expert of the 15 instructed tasks stays in (measured 2026-12-07: door-close reaches
    # x -0.50, button-press-topdown z 0.42); the mocap's own limits are x +-0.525, y 0.348-1.025, z -0.05-0.70.
    # Of the other 35 tasks' experts (3 layouts each, to success) only lever-pull's leaves it (z 0.47): its demos
    # carry hand-out-of-box labels until the box is re-measured over all 50
    safety = SafetyDefaults(workspace_low=(-0.52, 0.36, 0.0), workspace_high=(0.52, 0.95, 0.45),
                            object_min_z=-0.05, table_force_n=5.0)
    robot_bodies = ("right_", "hand", "rightclaw", "rightpad", "leftclaw", "leftpad")
    table_bodies = ("tablelink",)

    def cameras(self, env: gym.Env, cameras: Cameras) -> MujocoCameras:
        return MujocoCameras(env, cameras, flip=CAMERAS)  # MuJoCo returns Meta-World's views upside down

    def make_env(self, task: str, *, max_episode_steps: int | None = None, **render: Any) -> gym.Env:
        return make_env(task, max_episode_steps=max_episode_steps or MAX_EPISODE_STEPS, **render)

    def make_expert(self, task: str) -> Expert:
        return make_expert(task)

    def goal_rule(self, task: str) -> GoalRule | None:
        if task not in SUCCESS_RULES:
            return None
        part, offset, radius = SUCCESS_RULES[task]
        hand = None if part == HAND_SLICE else HAND_SLICE  # an object must be reached by the tool centre first
        return GoalRule(part, GOAL_SLICE, radius, tuple(float(x) for x in offset), hand=hand,
                        hand_offset=tuple(float(x) for x in TCP_OFFSET))


METAWORLD = MetaWorld()

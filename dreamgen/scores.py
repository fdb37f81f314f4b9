"""Scores of a probability against real outcomes, shared by the quality model (``dreamgen.quality.model``)
and the safety head (``dreamgen.world_model.risk``); below both, importing neither."""

from __future__ import annotations

import numpy as np


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged); nan with one class only."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

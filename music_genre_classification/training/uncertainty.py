"""95% bootstrap intervals for a test score: resample the clips, or whole artists when their index is known
(clips of one artist are not independent: resampling them one by one would make the interval too narrow)."""

import numpy as np

RESAMPLES = 2000


def accuracy_and_macro_f1(labels: np.ndarray, predicted: np.ndarray, n_genres: int) -> tuple[float, float]:
    """As evaluate.report: accuracy, and F1 averaged over the genres present in `labels`."""
    confusion = np.bincount(labels * n_genres + predicted, minlength=n_genres**2).reshape(n_genres, n_genres)
    hits, true, said = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    present = true > 0
    f1 = np.divide(2 * hits, true + said, out=np.zeros(n_genres), where=true + said > 0)  # = 2PR / (P + R)
    return float(hits.sum() / max(len(labels), 1)), float(f1[present].mean()) if present.any() else 0.0


def bootstrap_intervals(
    labels: np.ndarray, predicted: np.ndarray, n_genres: int, groups: list[str] | None = None, seed: int = 0
) -> dict:
    """Percentile intervals (2.5%, 97.5%) of accuracy and macro-F1 over RESAMPLES resamples of the clips, or of
    the `groups` (artists: each drawn group brings all its clips) when given."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(labels))]
    else:
        names = sorted(set(groups))
        members = [np.array([i for i, g in enumerate(groups) if g == name]) for name in names]
    scores = []
    for _ in range(RESAMPLES):
        drawn = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        scores.append(accuracy_and_macro_f1(labels[drawn], predicted[drawn], n_genres))
    low, high = np.percentile(np.array(scores), [2.5, 97.5], axis=0)
    return {
        "accuracy_ci95": [float(low[0]), float(high[0])],
        "macro_f1_ci95": [float(low[1]), float(high[1])],
        "bootstrap": {"resampled": "artists" if groups else "clips", "units": len(members), "resamples": RESAMPLES},
    }

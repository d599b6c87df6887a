"""Temperature scaling of clip probabilities, fitted on val, and the expected calibration error (ECE).

A clip's probabilities p (averaged over its crops, or blended by an ensemble) become softmax(log p / T): T > 1
softens an over-confident model, T < 1 sharpens a timid one, and the ranking of the genres (so accuracy) stays.
"""

import numpy as np

ECE_BINS = 15


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) of each row; T = 1 gives p back."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def mean_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] with the lowest mean negative log likelihood of the labels (one scalar, on val)."""
    from scipy.optimize import minimize_scalar  # here: `infer` starts without scipy.optimize

    labels = np.asarray(labels, dtype=int)
    found = minimize_scalar(
        lambda log_t: mean_nll(temperature_scaled(probs, float(np.exp(log_t))), labels),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(found.x))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: clips, mean confidence, accuracy; and the ECE (their weighted gap)."""
    confidence, hits = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (0, 1/bins] is bin 0
    counts = np.bincount(which, minlength=bins)
    mean_confidence = np.bincount(which, confidence, bins) / np.maximum(counts, 1)
    accuracy = np.bincount(which, hits.astype(float), bins) / np.maximum(counts, 1)
    ece = float((counts * np.abs(accuracy - mean_confidence)).sum() / max(len(labels), 1))
    return {"ece": ece, "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    return reliability(probs, labels, bins)["ece"]


def ece_of_a_calibrated_model(probs: np.ndarray, draws: int = 1000, seed: int = 0) -> float:
    """The mean ECE these probabilities would show if they were perfectly calibrated: each clip's top genre drawn
    right with its confidence. On a few hundred clips this is far from 0 (the bins hold few clips), and an ECE
    near it is all the data can show."""
    rng = np.random.default_rng(seed)
    top = probs.argmax(axis=1)
    wrong = (top + 1) % probs.shape[1]
    eces = [
        expected_calibration_error(probs, np.where(rng.random(len(probs)) < probs.max(axis=1), top, wrong))
        for _ in range(draws)
    ]
    return float(np.mean(eces))

"""calibrate: fit a checkpoint's temperature on the val part of its own split and store it (for checkpoints trained
before `train` did so, or to refit an ensemble's); every consumer then applies it."""

from pathlib import Path

import torch

from music_genre_classification.config import UserError, compose
from music_genre_classification.models.calibration import (
    expected_calibration_error,
    fit_temperature,
    temperature_scaled,
)
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.predictors import predictor
from music_genre_classification.training.evaluate import clip_scores


def calibrate(checkpoint: str, output_path: str) -> float:
    output = Path(output_path)
    if output.suffix != ".ckpt":
        raise UserError(f"{output}: the calibrated checkpoint is written as a .ckpt file")
    ckpt = load_checkpoint(checkpoint)
    ckpt["hyper_parameters"]["temperature"] = 1.0  # fitted on the unscaled probabilities
    scores = clip_scores(ckpt, predictor(ckpt), "val", {}, compose("test", []).data)
    if not scores.ids:
        raise UserError(f"{checkpoint}: its split has no val clip to fit a temperature on")
    temperature = fit_temperature(scores.probs, scores.labels)
    ckpt["hyper_parameters"]["temperature"] = temperature
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, output)
    before = expected_calibration_error(scores.probs, scores.labels)
    after = expected_calibration_error(temperature_scaled(scores.probs, temperature), scores.labels)
    print(f"val: {len(scores.ids)} clips; temperature {temperature:.3f}; val ECE {before:.4f} -> {after:.4f}")
    print(f"written: {output}")
    return temperature

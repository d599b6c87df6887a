"""Temperature of a checkpoint, fitted on val clips and stored in it; every consumer then applies it.

`train` calls it on each new checkpoint with the val clips it trained beside; the `calibrate` command on a checkpoint
trained before `train` did so (or an ensemble's, to refit it), with the val part of the checkpoint's own split.
"""

from pathlib import Path

import torch

from music_genre_classification.config import UserError, compose
from music_genre_classification.models.calibration import (
    expected_calibration_error,
    fit_temperature,
    temperature_scaled,
)
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.predictors import predictor, track_probabilities
from music_genre_classification.training.evaluate import clip_scores


def calibrate(checkpoint: str | Path, output_path: str | Path, *, datamodule=None) -> float:
    """Fit CHECKPOINT's temperature on the val part of its split; write it with the temperature to --output_path.

    The clips are scored as `test` scores them; `datamodule` (Python callers only): its val clips (set up) instead.
    Returns the temperature."""
    output = Path(output_path)
    if output.suffix != ".ckpt":
        raise UserError(f"{output}: the calibrated checkpoint is written as a .ckpt file")
    ckpt = load_checkpoint(checkpoint)
    ckpt["hyper_parameters"]["temperature"] = 1.0  # fitted on the unscaled probabilities
    if datamodule is not None:
        _, labels, tracks = datamodule.tracks("val")
        probs, _ = track_probabilities(predictor(ckpt), tracks)
    else:
        scores = clip_scores(ckpt, predictor(ckpt), "val", {}, compose("test", []).data)
        probs, labels = scores.probs, scores.labels
    if not len(labels):
        raise UserError(f"{checkpoint}: its split has no val clip to fit a temperature on")
    temperature = fit_temperature(probs, labels)
    ckpt["hyper_parameters"]["temperature"] = temperature
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, output)
    if datamodule is None:  # the command's report; `train` prints the temperature in its summary
        before = expected_calibration_error(probs, labels)
        after = expected_calibration_error(temperature_scaled(probs, temperature), labels)
        print(f"val: {len(labels)} clips; temperature {temperature:.3f}; val ECE {before:.4f} -> {after:.4f}")
        print(f"written: {output}")
    return temperature

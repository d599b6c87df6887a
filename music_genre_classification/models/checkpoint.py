"""The one checkpoint loader: a training checkpoint of this project, read as weights only (loading never runs code),
and the line that says why a checkpoint does not fit the model it names."""

import warnings
from pathlib import Path

import torch

from music_genre_classification.config import UserError, first_line
from music_genre_classification.models.predictors import checkpoint_kind


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint of this project, or a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it does not expect: the error says enough
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        code = "Unsupported global" in str(err)  # a pickled object: loading it would run code
        why = "it holds objects other than tensors and plain values; refused" if code else ""
        raise UserError(f"{path}: not a readable checkpoint ({why or type(err).__name__})") from None
    if checkpoint_kind(ckpt) is None:
        raise UserError(f"{path}: not a music_genre_classification checkpoint")
    return ckpt


def checkpoint_problem(err: Exception) -> str:
    """The line of torch's load_state_dict error that names the problem ("size mismatch for head.1.weight ...")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and "state_dict" in lines[0] else first_line(err)
    if isinstance(err, KeyError):
        text = f"no {text} in its hyper-parameters"
    return text if len(text) <= 200 else text[:197] + "..."

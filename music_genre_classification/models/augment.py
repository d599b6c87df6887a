"""Augmentations of training crops [batch, 1, n_mels, columns] beside SpecAugment and the mel shift of
lightning_module.py: a random level and EQ tilt over the mel bands, and a time stretch by resampling columns."""

import torch
import torch.nn.functional as F


def gain_tilt(crops: torch.Tensor, gain: float, tilt: float) -> torch.Tensor:
    """Add to each crop a random level in [-gain, gain] and a straight line over the mel bands going from -t to +t,
    t in [-tilt, tilt] (a brighter or darker EQ). The spectrograms are log-mel scaled to [0, 1] per clip, so both are
    additive, in units of that clip's dynamic range."""
    batch, _, mels, _ = crops.shape
    levels = (torch.rand(batch, 1, 1, 1, device=crops.device) * 2 - 1) * gain
    slopes = (torch.rand(batch, 1, 1, 1, device=crops.device) * 2 - 1) * tilt
    line = torch.linspace(-1, 1, mels, device=crops.device).view(1, 1, mels, 1)
    return crops + levels + slopes * line


def time_stretch(crops: torch.Tensor, max_stretch: float) -> torch.Tensor:
    """Resample each crop's columns at a random rate in [1 - max_stretch, 1 + max_stretch] around its centre
    (faster or slower music, same pitch); a faster crop repeats its edge columns where it runs out."""
    batch = len(crops)
    rates = 1 + (torch.rand(batch, device=crops.device) * 2 - 1) * max_stretch
    theta = torch.zeros(batch, 2, 3, device=crops.device)
    theta[:, 0, 0], theta[:, 1, 1] = rates, 1.0  # x (columns) scaled by the rate, y (mel bands) kept
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    return F.grid_sample(crops, grid, padding_mode="border", align_corners=False)

"""Is there music in a window of audio? Signal evidence only (numpy and torch), computed per window.

Two questions, asked of every window a model would judge:
- is anything audible (`level_db`): silence, a DC offset, or a tone that resampling to the model's rate removed
  leave nothing to classify; such windows are skipped;
- does it sound like music at all (`window_evidence` -> `not_music_reason`): a steady tone, a sweep, noise, clicks or
  applause, speech. The model only knows the genres it was trained on and gives one of them, confidently, to
  anything; this check says when its answer means nothing.

The thresholds were chosen on one part of a set of real music and synthetic non-music, and measured on the other:
studies/non_music.py, docs/non_music.md.
"""

from dataclasses import dataclass

import numpy as np
import torch

# The rule's thresholds (why each: studies/non_music.py prints the quantiles of real music beside them, chosen on
# its dev part; docs/non_music.md has the held-out table)
SILENT_DB = -60.0  # RMS level, dBFS, after removing DC: far below the quietest real music clip of the study
STEADY_BELOW = 1.5  # `steady` under this: the spectral shape does not move (tones, hum, square waves, coloured noise)
PEAK_SHARE_ABOVE = 0.85  # two adjacent mel bands hold this share of the power: a single tone, a sweep, beeps
FLATNESS_ABOVE = 0.2  # flatter than any music of the study: white noise, hiss, clicks
PEAK_SHARE_BELOW = 0.2  # no band stands out at all: broadband noise, applause, crackle
FLUX_ABOVE = 10.0  # the shape jumps between columns as formants and pauses of speech do; music changes less
REASONS = {  # why a window is not music, in words for the user
    "silence": "silent",
    "steady": "a steady sound: tone, hum or noise",
    "tone": "a single tone or sweep",
    "noise": "noise-like",
    "speech": "speech-like",
}
QUIET_BELOW_DB = 30.0  # a column this far below the window's loud columns (90th percentile) counts as a pause
SMOOTH_COLUMNS = 8  # ~0.6 s: a stationary noise's random wobble mostly averages out, a melody's notes do not
FIRST_BAND = 2  # the mel bands below (under ~50 Hz at 128 bands) hold a DC offset and rumble, not music


def level_db(wave: np.ndarray | torch.Tensor) -> float:
    """RMS level of a window in dBFS once its DC offset is removed (-inf for digital silence)."""
    wave = torch.as_tensor(wave, dtype=torch.float64)
    rms = float((wave - wave.mean()).square().mean().sqrt()) if wave.numel() else 0.0
    return 20 * float(np.log10(rms)) if rms > 0 else float("-inf")


@dataclass(frozen=True)
class Evidence:
    """What the log-mel spectrogram of one window says about it (see window_evidence)."""

    quiet_share: float  # share of columns far below the loud ones: pauses between words
    peak_share: float  # median over loud columns of the power share of the strongest two adjacent mel bands
    flatness: float  # median spectral flatness of loud columns over the mel bands
    change: float  # median dB distance of a loud column's spectral shape from the window's median shape
    flux: float  # median dB change of the spectral shape from one loud column to the next
    loudness_spread: float  # dB between the 10th and 90th percentile of the loud columns' loudness
    steady: float  # as `change`, on the shape averaged over SMOOTH_COLUMNS: noise's random wobble evens out


def window_evidence(spec: torch.Tensor, top_db: float = 80.0) -> Evidence:
    """Evidence from a window's normalised log-mel spectrogram [n_mels, columns] (LogMel's output, values in [0, 1])."""
    db = (spec[FIRST_BAND:].double() - 1) * top_db  # dB below the window's loudest cell, floor at -top_db
    power = torch.pow(10.0, db / 10)
    loudness = 10 * torch.log10(power.sum(0))
    top = torch.quantile(loudness, 0.9)
    loud = loudness > top - QUIET_BELOW_DB
    quiet_share = 1 - float(loud.double().mean())
    db, power, loudness = db[:, loud], power[:, loud], loudness[loud]
    pairs = power[:-1] + power[1:]
    peak_share = float((pairs.amax(0) / power.sum(0)).median())
    log_power = db * (np.log(10) / 10)
    flatness = float(torch.exp(log_power.mean(0) - torch.logsumexp(log_power, 0) + np.log(db.shape[0])).median())
    shape = db - loudness  # each column relative to its own loudness
    shape = shape.clamp(min=-top_db)
    # band-limited audio (a telephone recording, an 8 kHz file) leaves its upper bands at the floor: a shape measured
    # over them would look steadier than the music is, so the shape measures use only the bands that hold sound
    held = (shape > -top_db + 1).double().mean(1) >= 0.5
    if int(held.sum()) >= 2:
        shape, db, power = shape[held], db[held], power[held]
    change = float((shape - shape.median(1, keepdim=True).values).abs().mean(0).median())
    flux = float((shape[:, 1:] - shape[:, :-1]).abs().mean(0).median()) if shape.shape[1] > 1 else 0.0
    spread = float(torch.quantile(loudness, 0.9) - torch.quantile(loudness, 0.1))
    if power.shape[1] >= SMOOTH_COLUMNS:
        smooth = torch.nn.functional.avg_pool1d(power[None], SMOOTH_COLUMNS, SMOOTH_COLUMNS)[0]
    else:
        smooth = power.mean(1, keepdim=True)
    smooth_db = (10 * torch.log10(smooth.clamp(min=1e-12)) - 10 * torch.log10(smooth.sum(0))).clamp(min=-top_db)
    steady = float((smooth_db - smooth_db.median(1, keepdim=True).values).abs().mean(0).median())
    return Evidence(quiet_share, peak_share, flatness, change, flux, spread, steady)


def not_music(evidence: Evidence) -> str | None:
    """Why an audible window does not sound like music (a key of REASONS), or None when it may be music."""
    if evidence.peak_share > PEAK_SHARE_ABOVE:
        return "tone"
    if evidence.steady < STEADY_BELOW:
        return "steady"
    if evidence.flatness > FLATNESS_ABOVE or evidence.peak_share < PEAK_SHARE_BELOW:
        return "noise"
    if evidence.flux > FLUX_ABOVE:
        return "speech"
    return None


def window_verdict(wave: np.ndarray | torch.Tensor, spec: torch.Tensor | None, top_db: float = 80.0) -> str | None:
    """None for a window that may be music, else why not (a key of REASONS); `spec`: its log-mel spectrogram."""
    if level_db(wave) < SILENT_DB:
        return "silence"
    return not_music(window_evidence(spec, top_db)) if spec is not None else None


SKIPPED = ("silence", "noise")  # windows left out: nothing there, or nothing but noise; the model never sees them


def judged_windows(blocks, front_end, name: str = "audio") -> list[tuple[float, float, object, str | None]]:
    """(start_s, end_s, the model's input, verdict) per window of a track: verdict None where it may be music, else
    a key of REASONS; skipped windows (SKIPPED) have no input. A track with nothing but such windows (or too short,
    out of range) is an AudioError."""
    from music_genre_classification.data.audio import AudioError
    from music_genre_classification.data.spectrogram import checked_windows

    log_mel = getattr(front_end, "log_mel", front_end)
    windows = []
    for start, end, wave in checked_windows(blocks, front_end.params, name):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
        spec = log_mel(wave)
        verdict = window_verdict(wave, spec, log_mel.params.top_db)
        model_input = None if verdict in SKIPPED else spec if log_mel is front_end else front_end(wave)
        windows.append((start, end, model_input, verdict))
    if all(verdict in SKIPPED for *_, verdict in windows):
        if any(verdict == "noise" for *_, verdict in windows):
            raise AudioError(f"{name}: sounds like noise (a flat spectrum), not music")
        raise AudioError(f"{name}: the audio is silent (nothing audible)")
    return windows

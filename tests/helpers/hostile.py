"""Hostile input: a folder of broken, odd and misleading audio files, each with what every entry point must do.

`write_hostile(folder)` writes the files and returns the cases. An entry point (Python API, `infer`, `test`, the
bot, an HTTP server...) turns its answer for a file into an `Outcome`, and `check` holds it to the contract:
a genre for audio that is there (and never more seconds than there are), a warning for a file cut off, a one-line
error naming the problem otherwise, and never a traceback.
"""

import io
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.audio import CLIP_S, GENRES, SR, encode, tone
from music_genre_classification.data.audio import MIN_DURATION_S
from music_genre_classification.data.feature_table import MIN_FEATURE_S

SECONDS = max(12.0, 2.5 * MIN_DURATION_S)  # long enough that a file cut in half still holds audio to judge


@dataclass(frozen=True)
class Hostile:
    name: str  # path inside the folder
    expect: str  # "genre", "cut" (a genre and a warning), "error", "any" (a genre or an error), "unlisted"
    # "genre"/"cut": the genre, or "" for any genre of the model (the toy model is fragile on lossy or 8-kHz audio);
    # "error": words the message must hold, or alternatives "a|b" (decoders differ: ffmpeg takes over from libsndfile
    # where it is installed, and `serve` refuses by the first bytes what is no audio file); "unlisted": why it is left
    # out of a folder's listing
    says: str = ""
    seconds: float = 0.0  # audio really there: no answer may claim more


@dataclass
class Outcome:
    kind: str  # "genre", "error" or "skipped" (left out of a folder's listing, with a warning)
    genre: str | None = ""  # None: the entry point names no genre (`features` writes a row of features)
    duration_s: float = 0.0
    warning: str = ""
    message: str = ""
    not_music: str = ""  # why the entry point says the audio does not sound like music ("" when it may be music)


def check(case: Hostile, outcome: Outcome, where: str) -> None:
    what = f"{where}: {case.name!r} expected {case.expect} {case.says!r}, got {outcome}"
    assert "Traceback" not in outcome.message + outcome.warning, what
    assert "\n" not in outcome.message.strip() and "\n" not in outcome.warning.strip(), what
    if outcome.kind == "genre":
        assert outcome.duration_s <= case.seconds + 0.05, what  # never a prediction for audio that is not there
    if case.expect in ("genre", "cut"):
        assert outcome.kind == "genre", what
        if outcome.genre is not None:
            assert outcome.genre == case.says if case.says else outcome.genre in GENRES, what
        assert bool(outcome.warning) == (case.expect == "cut"), what
        assert not outcome.not_music, what  # music is never called not music
    if case.expect == "cut":
        assert MIN_DURATION_S <= outcome.duration_s < SECONDS - 0.5, what
    elif case.expect == "error":
        assert case.says, f"{case.name}: an error case must name words of its message"
        assert outcome.kind == "error", what
        assert any(words.lower() in outcome.message.lower() for words in case.says.split("|")), what
    elif case.expect == "any":
        assert outcome.kind in ("genre", "error"), what
    elif case.expect == "unlisted":
        assert outcome.kind in ("skipped", "error"), what


def write_hostile(folder: Path) -> list[Hostile]:
    folder.mkdir(parents=True, exist_ok=True)
    cases, rng = [], np.random.default_rng(12)
    music = tone("low", 1, SECONDS)

    def add(name: str, data: bytes, expect: str, says: str = "", seconds: float = 0.0) -> None:
        (folder / name).write_bytes(data)
        cases.append(Hostile(name, expect, says, seconds))

    # audio that is fine, however odd its encoding, rate, channels or name
    for name, subtype in [
        ("8bit.wav", "PCM_U8"),
        ("24bit.wav", "PCM_24"),
        ("int32.wav", "PCM_32"),
        ("f64.wav", "DOUBLE"),
        ("ulaw.wav", "ULAW"),
    ]:
        add(name, encode(music, "WAV", subtype), "genre", "low", SECONDS)
    for rate in (96000, 44101):  # 44101 Hz: an exact resampling kernel would take 16 GB
        add(f"rate{rate}.wav", encode(tone("low", 2, sr=rate), "WAV", sr=rate), "genre", "low", CLIP_S)
    # no noise floor above 4 kHz: any genre; the mid tune, since the low one (110-330 Hz under a 4-kHz band of faint
    # noise) is too plain to pass as music (real clips at 8 kHz do: docs/results/non_music.md)
    rate8000 = encode(tone("mid", 2, sr=8000), "WAV", sr=8000)
    add("rate8000.wav", rate8000, "genre", "", CLIP_S)
    add("six_channels.flac", encode(np.stack([tone("mid", 3)] * 6, axis=1), "FLAC"), "genre", "mid", CLIP_S)
    add("tail 1.2 s after 30 s.ogg", encode(tone("mid", 4, 31.2), "OGG"), "genre", "", 31.2)
    for name in ("spaces and ünïcode.flac", "-starts-with-dash.wav", "pipe:0.wav", "new\nline.wav"):
        add(name, encode(tone("high", 5), "WAV"), "genre", "high", CLIP_S)
    long = np.zeros(600 * SR, np.float32)  # ten minutes, small as FLAC: a tone, then silence
    long[: 20 * SR] = tone("mid", 5, 20)
    add("ten_minutes.flac", encode(long, "FLAC"), "genre", "", 600)
    unknown = bytearray(encode(tone("mid", 6), "WAV"))
    unknown[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # data size "unknown", as streaming writers leave it
    add("unknown_size.wav", bytes(unknown), "genre", "mid", CLIP_S)

    # nothing, or not audio at all
    for ext in ("wav", "mp3", "flac", "ogg", "m4a"):
        add(f"empty.{ext}", b"", "error", "empty file")
    unreadable = "not a readable audio file|not an audio file"  # the decoder's words | the server's
    for ext in ("wav", "mp3", "flac", "ogg", "opus", "m4a", "aiff", "au"):
        says = unreadable + ("|files need ffmpeg" if ext == "m4a" else "")
        add(f"random.{ext}", rng.integers(0, 256, 30000, dtype=np.uint8).tobytes(), "error", says)
    add("image.mp3", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(), "error", "PNG image")
    add("notes.wav", b"these are my notes, not a song\n" * 20, "error", "text file")
    add("id3_only.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00", "error", unreadable)

    # samples that are no music: silence, noise, NaN, absurd values, too short, absurd sample rate
    add("silence.wav", encode(np.zeros(round(CLIP_S * SR), np.float32), "WAV"), "error", "silent")
    noise = 0.3 * rng.standard_normal(round(CLIP_S * SR)).astype(np.float32)
    add("white_noise.wav", encode(noise, "WAV"), "error", "noise")
    nan = tone("low", 7)
    nan[SR : 2 * SR] = np.nan
    add("nan.wav", encode(nan, "WAV", "FLOAT"), "error", "NaN")
    inf = tone("low", 7)
    inf[100] = np.inf
    add("inf.wav", encode(inf, "WAV", "FLOAT"), "error", "infinite")
    add("huge_values.wav", encode(tone("low", 8) * 1e30, "WAV", "FLOAT"), "error", "out of range")
    too_short = min(MIN_DURATION_S, MIN_FEATURE_S) - 0.3  # too short for the model and for `features`
    add("too_short.wav", encode(tone("low", 9, too_short), "WAV"), "error", "too short")
    add("rate1000.wav", _raw_wav(tone("low", 9, sr=1000), 1000), "error", "sample rate")

    # cut off (an unfinished download) or damaged: only the audio there may be judged, with a warning
    for fmt, ext, subtype in [("WAV", "wav", None), ("FLAC", "flac", None), ("MP3", "mp3", None), ("OGG", "ogg", None)]:
        kept, lossless = 0.55, fmt in ("WAV", "FLAC")  # the toy model's genre survives lossless coding only
        # lossy coding flattens the low tune (110-330 Hz) into a steady sound; the mid one stays a tune
        whole = encode(music if lossless else tone("mid", 1, SECONDS), fmt, subtype)
        add(f"cut.{ext}", whole[: int(len(whole) * kept)], "cut", "low" if lossless else "", SECONDS * kept + 0.5)
        # libsndfile reads what is left of a WAV or MP3 and says how much of the announced audio that is; a FLAC or
        # OGG it cannot read at all, and ffmpeg (where installed) may get a sliver out of them
        too_little = "too little audio left to classify"
        too_little += "" if fmt in ("WAV", "MP3") else "|not a readable audio file|too short"
        add(f"cut_to_nothing.{ext}", whole[: max(int(len(whole) * 0.02), 60)], "error", too_little)
        damaged = bytearray(whole)
        middle = len(damaged) // 2
        damaged[middle : middle + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        add(f"damaged_middle.{ext}", bytes(damaged), "any", "", SECONDS)
    add("header_only.wav", encode(music, "WAV")[:44], "error", "cut off")
    if shutil.which("ffmpeg"):
        wav = folder / "_source.wav"
        wav.write_bytes(encode(music, "WAV"))
        for name, flags in [("whole.m4a", []), ("faststart.m4a", ["-movflags", "+faststart"])]:
            command = ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", *flags, str(folder / name)]
            subprocess.run(command, check=True)
        wav.unlink()
        m4a = (folder / "whole.m4a").read_bytes()
        (folder / "whole.m4a").unlink()
        add("cut_index_at_end.m4a", m4a[: len(m4a) // 2], "error", "moov atom")
        fast = (folder / "faststart.m4a").read_bytes()
        (folder / "faststart.m4a").unlink()
        add("cut_faststart.m4a", fast[: int(len(fast) * 0.55)], "cut", "", SECONDS * 0.55 + 0.5)

    # links: to a file (labelled once, as that file), broken, looping, and a folder linking back up
    os.symlink("8bit.wav", folder / "link_to_8bit.wav")
    cases.append(Hostile("link_to_8bit.wav", "genre", "low", SECONDS))
    os.symlink("missing.wav", folder / "broken_link.wav")
    cases.append(Hostile("broken_link.wav", "unlisted", "broken link"))
    os.symlink("loop.wav", folder / "loop.wav")
    cases.append(Hostile("loop.wav", "unlisted", "loop"))
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")
    return cases


def _raw_wav(samples: np.ndarray, rate: int) -> bytes:
    """A 16-bit WAV at any rate, written by hand: soundfile refuses rates it finds absurd."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


# --- checkpoints that try to run code when loaded ---------------------------------------------------------------------

CNN = "music_genre_classification.models.networks.GenreCNN"


def tiny_checkpoint() -> dict:
    """A real CNN checkpoint of this project (untrained: loading is what is tested), small and made in a moment."""

    from music_genre_classification.data.spectrogram import SpectrogramParams
    from music_genre_classification.models.networks import GenreCNN

    net = {"_target_": CNN, "channels": [4, 8, 8, 8], "dropout": 0.3, "input_norm": False, "n_mels": 128, "n_mfcc": 0}
    state = GenreCNN(n_genres=3, **{k: v for k, v in net.items() if k != "_target_"}).state_dict()
    hp = {"genres": ["low", "mid", "high"], "net": net, "spectrogram": SpectrogramParams().to_dict()}
    hp |= {"crop_columns": 32, "eval_hop": 16}
    return {"hyper_parameters": hp, "state_dict": {f"net.{k}": v for k, v in state.items()}}


class _Pickled:
    """Unpickled by torch.load(weights_only=False), it would write `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "ran")


def write_hostile_checkpoints(folder: Path) -> tuple[list[str], Path]:
    """Crafted checkpoints, each of which ran code (or read the environment) when loaded: the file names, and the
    marker file any of them would write if its code ran. Every one must be refused with one line, leaving no trace."""
    import copy

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "marker.txt"
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
    write = {"_target_": "pathlib.Path.write_text", "self": path, "data": "ran"}
    names = []

    def add(name: str, change) -> None:
        ckpt = copy.deepcopy(tiny_checkpoint())
        change(ckpt["hyper_parameters"])
        torch.save(ckpt, folder / name)
        names.append(name)

    add("target_print.ckpt", lambda hp: hp.update(net={"_target_": "builtins.print", "_args_": ["ran"],
                                                        "file": {"_target_": "builtins.open", "_args_": [str(marker), "w"]}}))  # fmt: skip
    add("nested_target.ckpt", lambda hp: hp["net"].update(dropout=write))  # writes, returns 3: a valid dropout
    add("args.ckpt", lambda hp: hp.update(net={"_target_": "pathlib.Path.write_text", "_args_": [path, "ran"]}))
    add("partial.ckpt", lambda hp: hp["net"].update(_partial_=True))
    add("recursive.ckpt", lambda hp: hp["net"].update(_recursive_=False, _convert_="all"))
    add("resolver.ckpt", lambda hp: hp["net"].update(dropout="${oc.env:MGC_SECRET}"))
    add("not_ours.ckpt", lambda hp: hp.update(net={"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 2}))
    add("huge.ckpt", lambda hp: hp["net"].update(channels=[65536] * 8))
    add("bad_spectrogram.ckpt", lambda hp: hp["spectrogram"].update(n_fft={"_target_": "builtins.int", "_args_": [9]}))
    member = copy.deepcopy(tiny_checkpoint())
    member["hyper_parameters"]["net"]["dropout"] = write
    ensemble = {"hyper_parameters": {"kind": "ensemble", "genres": ["low", "mid", "high"], "weights": [1.0]}}
    torch.save(ensemble | {"members": [member]}, folder / "ensemble_member.ckpt")
    names.append("ensemble_member.ckpt")
    torch.save({"hyper_parameters": _Pickled(marker)}, folder / "pickle.ckpt")
    names.append("pickle.ckpt")
    return names, marker

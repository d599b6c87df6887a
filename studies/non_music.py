"""Which audio is not music: a study of the open-set check in data/music_check.py.

Makes a set of non-music audio at run time (synthetic speech from espeak-ng with several voices and texts, tones,
sweeps, square waves, beeps, hum, clicks, white/pink/brown noise, applause-like bursts, silence with DC, a tone
above what the model hears) and takes the real music of data/dataset (the 100 GTZAN audio clips, and the 639 log-mel
spectrograms for the spectral part of the check). Each set is cut in two: music by artist (no artist on both
sides), non-music by seed (its voices, texts, frequencies and levels drawn anew). The rule's thresholds were chosen
on the first part ("dev"); the table reports the second ("held-out").

    python -m studies.non_music [--clips_per_kind 24] [--output docs/results/non_music.md]
"""

import argparse
import collections
import csv
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import torch

from music_genre_classification.data import music_check
from music_genre_classification.data.audio import load_audio
from music_genre_classification.data.spectrogram import LogMel, cut_windows
from music_genre_classification.data.split import read_artists
from studies.results import Results

REPO = Path(__file__).resolve().parent.parent

DATASET = REPO / "data" / "dataset"
VOICES = ["en", "en-us", "en-gb-scotland", "de", "fr-fr", "es", "it", "pt-br", "nl", "pl", "sv", "ru", "tr", "hi"]
TEXTS = [
    "The weather today will be cloudy in the morning, with some sunshine later in the afternoon. Winds are light "
    "and variable. Tomorrow we expect rain in the north and dry weather in the south, with temperatures near normal.",
    "Welcome to the evening news. Our top story tonight: the city council has approved a new budget for public "
    "transport, which includes three new bus lines and longer opening hours for the underground stations.",
    "Please listen carefully, as our menu options have changed. For billing questions, press one. To report a "
    "fault, press two. For all other enquiries, please stay on the line and an agent will be with you shortly.",
    "Chapter one. It was a bright cold day in April, and the clocks were striking thirteen. He slipped quickly "
    "through the glass doors, though not quickly enough to prevent a swirl of gritty dust from entering with him.",
    "In this lecture we will look at the second law of thermodynamics, and at why the entropy of a closed system "
    "never decreases. We begin with a simple example: a cup of hot coffee left on a table in a cold room.",
    "One, two, three, four, five, six, seven, eight, nine, ten. Eleven, twelve, thirteen, fourteen, fifteen. "
    "Sixteen, seventeen, eighteen, nineteen, twenty. Twenty one, twenty two, twenty three, twenty four.",
]


def _seconds(rng: np.random.Generator) -> float:
    return float(rng.uniform(10, 30))


def _level(wave: np.ndarray, rng: np.random.Generator, low_db: float = -40, high_db: float = -3) -> np.ndarray:
    """The wave scaled to a random peak between low_db and high_db dBFS."""
    peak = np.abs(wave).max()
    return (wave / max(peak, 1e-12) * 10 ** (rng.uniform(low_db, high_db) / 20)).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent: 0 white, 1 pink, 2 brown."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def speech(rng: np.random.Generator, folder: Path) -> tuple[np.ndarray, int]:
    """espeak-ng reading a text: a voice, speed and pitch drawn by `rng`."""
    voice, text = VOICES[rng.integers(len(VOICES))], TEXTS[rng.integers(len(TEXTS))]
    out = folder / "speech.wav"
    command = ["espeak-ng", "-v", voice, "-s", str(rng.integers(120, 200)), "-p", str(rng.integers(20, 80))]
    subprocess.run([*command, "-w", str(out), text], check=True, capture_output=True)
    wave, rate = sf.read(out, dtype="float32")
    return _level(wave, rng, -30, -1), rate


def tone(rng, rate=22050):
    t = np.arange(int(_seconds(rng) * rate)) / rate
    return _level(np.sin(2 * np.pi * np.exp(rng.uniform(np.log(40), np.log(9000))) * t), rng), rate


def sweep(rng, rate=22050):
    seconds = _seconds(rng)
    period = seconds if rng.random() < 0.5 else rng.uniform(0.5, 5)  # one sweep, or a repeated one
    t = np.arange(int(seconds * rate)) / rate
    f0, f1 = sorted(np.exp(rng.uniform(np.log(30), np.log(10000), 2)))
    method = "logarithmic" if rng.random() < 0.5 else "linear"
    return _level(scipy.signal.chirp(t % period, f0, period, f1, method=method), rng), rate


def square(rng, rate=22050):
    t = np.arange(int(_seconds(rng) * rate)) / rate
    f = np.exp(rng.uniform(np.log(40), np.log(2000)))
    return _level(scipy.signal.square(2 * np.pi * f * t, duty=rng.uniform(0.2, 0.5)), rng), rate


def beeps(rng, rate=22050):
    """A tone switched on and off: a busy signal, a reversing truck, an alarm clock."""
    t = np.arange(int(_seconds(rng) * rate)) / rate
    period, duty = rng.uniform(0.2, 2), rng.uniform(0.2, 0.7)
    gate = (t % period) < duty * period
    return _level(gate * np.sin(2 * np.pi * rng.uniform(300, 3000) * t), rng), rate


def hum(rng, rate=22050):
    """Mains hum: 50 or 60 Hz and its harmonics, with a little hiss."""
    t = np.arange(int(_seconds(rng) * rate)) / rate
    base = 50 if rng.random() < 0.5 else 60
    wave = sum(rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) for k in range(1, 8))
    return _level(wave + 0.003 * rng.standard_normal(t.size), rng), rate


def clicks(rng, rate=22050):
    """Short clicks: regular (a metronome, a ticking clock) or at random times (crackle)."""
    n = int(_seconds(rng) * rate)
    wave = np.zeros(n)
    if rng.random() < 0.5:
        starts = np.arange(0, n, int(rate / rng.uniform(0.5, 12)))
    else:
        starts = np.sort(rng.integers(0, n, int(n / rate * rng.uniform(1, 50))))
    length = max(2, int(rate * rng.uniform(0.0005, 0.005)))
    for start in starts[starts < n - length]:
        wave[start : start + length] += rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
    return _level(wave, rng), rate


def noise(exponent: float):
    def make(rng, rate=22050):
        return _level(coloured_noise(int(_seconds(rng) * rate), exponent, rng), rng, -50, -3), rate

    return make


def applause(rng, rate=22050):
    """Many claps (short noise bursts of ~10 ms, each filtered a little differently), denser and sparser in turn."""
    n = int(_seconds(rng) * rate)
    wave = np.zeros(n + rate)
    density = rng.uniform(5, 150) * (1 + 0.8 * np.sin(2 * np.pi * np.arange(n) / n * rng.uniform(0.2, 2)))
    count = int(density.mean() * n / rate)
    for start in rng.integers(0, n, count):
        length = int(rate * rng.uniform(0.005, 0.03))
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
        b, a = scipy.signal.butter(2, np.sort(rng.uniform(300, 8000, 2)) / (rate / 2), "bandpass")
        wave[start : start + length] += scipy.signal.lfilter(b, a, burst) * rng.uniform(0.2, 1)
    return _level(wave[:n], rng), rate


def silence_dc(rng, rate=22050):
    """A constant offset (a faulty interface, a muted input), maybe with a trace of noise far below hearing."""
    n = int(_seconds(rng) * rate)
    return (rng.uniform(-0.5, 0.5) + 1e-6 * rng.standard_normal(n) * (rng.random() < 0.5)).astype(np.float32), rate


def ultrasonic(rng, rate=96000):
    """A tone above 11 kHz recorded at 96 kHz: nothing of it is left at the model's 22050 Hz."""
    t = np.arange(int(_seconds(rng) * rate)) / rate
    return _level(np.sin(2 * np.pi * rng.uniform(12000, 40000) * t), rng, -20, -1), rate


KINDS = {
    "speech": None,  # needs the folder: made by speech()
    "tone": tone,
    "sweep": sweep,
    "square": square,
    "beeps": beeps,
    "hum": hum,
    "clicks": clicks,
    "white noise": noise(0),
    "pink noise": noise(1),
    "brown noise": noise(2),
    "applause": applause,
    "silence + DC": silence_dc,
    "ultrasonic tone": ultrasonic,
}


def make_non_music(folder: Path, kind: str, seed: int) -> Path:
    """One file of `kind`, drawn with `seed`, written as WAV (at its own rate) to `folder`."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    wave, rate = speech(rng, folder) if kind == "speech" else KINDS[kind](rng)
    path = folder / f"{kind.replace(' ', '_').replace('+', 'and')}.{seed:03d}.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    return path


def music_clips() -> list[tuple[str, str, Path | None]]:
    """(clip id, artist, audio file or None) of the real music: the audio clips, then the spectrogram-only clips."""
    artists = read_artists("GTZANindex.txt")
    clips = {}
    with open(DATASET / "genres_original" / "MANIFEST.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = DATASET / row["file"]
            clips[f"{row['genre']}/{path.stem}"] = path
    for spec in sorted((DATASET / "spectrograms").glob("*/*.npy")):
        clips.setdefault(f"{spec.parent.name}/{spec.stem}", None)
    return [(clip, artists.get(clip, clip), path) for clip, path in sorted(clips.items())]


def lossy_variants(path: Path) -> dict[str, Path]:
    """The clip as an MP3 and as telephone-quality 8-kHz audio (temporary files beside nothing of the dataset)."""
    wave, rate = sf.read(path, dtype="float32")
    variants = {}
    for name, suffix, out_rate in (("music (audio, MP3)", ".mp3", rate), ("music (audio, 8 kHz)", ".wav", 8000)):
        out = Path(tempfile.mkstemp(suffix=suffix, prefix="non-music-")[1])
        resampled = scipy.signal.resample_poly(wave, out_rate, rate, axis=0) if out_rate != rate else wave
        sf.write(out, resampled, out_rate, format="MP3" if suffix == ".mp3" else "WAV")
        variants[name] = out
    return variants


def file_verdicts(path: Path, log_mel: LogMel) -> tuple[list[str | None], list]:
    """Per window of a file: the check's verdict (None: may be music) and its evidence (None when silent)."""
    verdicts, evidence = [], []
    for wave in cut_windows([load_audio(path, log_mel.params.sample_rate)], log_mel.params):
        spec = log_mel(torch.from_numpy(np.ascontiguousarray(wave)))
        verdicts.append(music_check.window_verdict(wave, spec, log_mel.params.top_db))
        evidence.append(music_check.window_evidence(spec) if verdicts[-1] != "silence" else None)
    return verdicts, evidence


def flagged(verdicts: list[str | None]) -> str | None:
    """A file is flagged when none of its windows may be music: the most common reason, else None."""
    if any(v is None for v in verdicts):
        return None
    return collections.Counter(verdicts).most_common(1)[0][0]


def artist_parts(clips: list[tuple[str, str, Path | None]], seed: int = 0) -> dict[str, str]:
    """Artist -> dev or held-out, half of the artists each (in a seeded order)."""
    artists = sorted({artist for _, artist, _ in clips})
    order = [artists[i] for i in np.random.default_rng(seed).permutation(len(artists))]
    return {artist: "dev" if i < len(order) // 2 else "held-out" for i, artist in enumerate(order)}


def run(clips_per_kind: int, output: str | None) -> list[dict]:
    torch.set_num_threads(1)
    log_mel, rows, dev_music = LogMel(), [], []
    with tempfile.TemporaryDirectory(prefix="non-music-") as folder:
        for kind in KINDS:
            for seed in range(clips_per_kind):
                path = make_non_music(Path(folder), kind, seed)
                verdicts, _ = file_verdicts(path, log_mel)
                part = "dev" if seed < clips_per_kind // 2 else "held-out"
                rows.append({"set": kind, "part": part, "flag": flagged(verdicts)})
                path.unlink()
    clips = music_clips()
    parts = artist_parts(clips)
    for clip, artist, path in clips:
        part = parts[artist]
        if path is not None:  # the real audio, the whole way, as it is and as users' files often are
            verdicts, evidence = file_verdicts(path, log_mel)
            rows.append({"set": "music (audio)", "part": part, "flag": flagged(verdicts), "clip": clip})
            for name, variant in lossy_variants(path).items():
                flag = flagged(file_verdicts(variant, log_mel)[0])
                coding = name.removeprefix("music (audio, ").removesuffix(")")
                rows.append({"set": name, "part": part, "flag": flag, "clip": f"{clip} as {coding}"})
                variant.unlink()
        else:  # the spectral part of the check on the dataset's log-mel spectrograms (no level to read)
            spec = torch.from_numpy(np.load(DATASET / "spectrograms" / f"{clip}.npy").astype(np.float32))
            evidence = [music_check.window_evidence(spec)]
            flag = music_check.not_music(evidence[0])
            rows.append({"set": "music (spectrogram)", "part": part, "flag": flag, "clip": clip})
        if part == "dev":
            dev_music += [e for e in evidence if e is not None]
    with Results(output, "non_music") as results:
        report(rows, dev_music, clips_per_kind, results)
    return rows


THRESHOLDS = [  # (evidence, the constant, which side is not music)
    ("steady", "STEADY_BELOW", "below"),
    ("peak_share", "PEAK_SHARE_ABOVE", "above"),
    ("flatness", "FLATNESS_ABOVE", "above"),
    ("peak_share", "PEAK_SHARE_BELOW", "below"),
    ("flux", "FLUX_ABOVE", "above"),
]


def report(rows: list[dict], dev_music: list, clips_per_kind: int, results: Results) -> None:
    print(
        f"Non-music: {clips_per_kind} files per kind, the first half (by seed) dev, the rest held-out; music: GTZAN "
        "clips of data/dataset split by artist. A file is flagged when none of its windows may be music. Thresholds "
        "were chosen on dev; the held-out rows come first."
    )
    table = []
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for part in ("held-out", "dev"):
        for name in sets:
            chosen = [r for r in rows if r["set"] == name and r["part"] == part]
            reasons = collections.Counter(r["flag"] for r in chosen if r["flag"])
            why = ", ".join(f"{music_check.REASONS[k]} {v}" for k, v in reasons.most_common())
            share = sum(bool(r["flag"]) for r in chosen) / max(len(chosen), 1)
            table.append([name, part, len(chosen), f"{share:.1%}", why or "-"])
        for name, group in (
            ("**all non-music**", [r for r in rows if r["part"] == part and not r["set"].startswith("music")]),
            ("**all music**", [r for r in rows if r["part"] == part and r["set"].startswith("music")]),
        ):
            flagged_share = sum(bool(r["flag"]) for r in group) / max(len(group), 1)
            table.append([name, part, len(group), f"**{flagged_share:.1%}**", ""])
            print(f"{part:>8}  {name.strip('*'):<16} {len(group):4d} files, {flagged_share:6.1%} flagged as not music")
    header = ["set", "part", "files", "flagged as not music", "why (most common)"]
    results.table("Flagged share per kind:", header, table)
    flagged_music = [
        f"{r['clip']} ({music_check.REASONS[r['flag']]}, {r['part']})" for r in rows if r.get("clip") and r["flag"]
    ]
    print("Music flagged: " + (", ".join(flagged_music) or "none"))
    quantiles = []
    for field, constant, side in THRESHOLDS:
        q = np.percentile(np.array([getattr(e, field) for e in dev_music]), [0, 1, 99, 100])
        quantiles.append([field, getattr(music_check, constant), side, *(f"{v:.3f}" for v in q)])
    results.table(
        "The thresholds beside real music of the dev part (quantiles of its windows' evidence):",
        ["evidence", "threshold", "not music when", "dev music min", "1%", "99%", "max"],
        quantiles,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips_per_kind", type=int, default=24)
    parser.add_argument("--output", help="write the figures as a Markdown page here (docs/results/non_music.md)")
    args = parser.parse_args()
    run(args.clips_per_kind, args.output)


if __name__ == "__main__":
    main()

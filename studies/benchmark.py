"""Speed figures: python -m studies.benchmark --model_path outputs/model_full.ckpt

Prints the 57 GTZAN features beside librosa's pipeline on the same clips, warm per-clip inference time (decode +
spectrogram + model), folder throughput, cold CLI start and training throughput in crops/s. With --features: only the
features, and their parity with the published features_30_sec.csv, column by column.
"""

import csv
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import fire
import numpy as np
import soundfile as sf
import torch

from music_genre_classification.data.audio import load_audio
from music_genre_classification.data.features import FEATURE_COLUMNS, FeatureExtractor
from music_genre_classification.data.folder import audio_files
from music_genre_classification.data.spectrogram import LogMel
from music_genre_classification.models.allowlist import build_network
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.classifier import GenreClassifier
from studies.results import Results


def kaggle_features(path: Path, as_published: bool = False) -> np.ndarray:
    """The 57 features in features_30_sec.csv's order, the seeds' librosa pipeline: with librosa's current defaults, or
    (as_published) as the table was made: reflect-padded frames (librosa < 0.10) and beat_track's tempo."""
    import librosa

    pad = "reflect" if as_published else "constant"
    y, sr = librosa.load(path, sr=22050)
    feats = [
        librosa.feature.chroma_stft(y=y, sr=sr, pad_mode=pad),
        librosa.feature.rms(y=y, pad_mode=pad),
        librosa.feature.spectral_centroid(y=y, sr=sr, pad_mode=pad),
        librosa.feature.spectral_bandwidth(y=y, sr=sr, pad_mode=pad),
        librosa.feature.spectral_rolloff(y=y, sr=sr, pad_mode=pad),
        librosa.feature.zero_crossing_rate(y),
        *librosa.effects.hpss(y, pad_mode=pad)[:2],
    ]
    stats = [v for f in feats for v in (np.mean(f), np.var(f))]
    if as_published:
        onsets = librosa.onset.onset_strength(y=y, sr=sr, aggregate=np.median, pad_mode=pad)
        tempo = librosa.feature.tempo(onset_envelope=onsets, sr=sr)[0]
    else:
        tempo = librosa.feature.tempo(y=y, sr=sr)[0]
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, pad_mode=pad)
    return np.array([*stats, tempo, *[v for m in mfcc for v in (m.mean(), m.var())]])


def feature_speed(files: list[Path]) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU ms per clip of the 57 features from a file, librosa's pipeline and ours, clip by clip in turn.

    Ours with one torch thread, as the features command runs it (its HPSS medians take a second core). Each run
    starts after a 0.3-s pause: numpy's OpenBLAS threads spin for ~0.1 s after librosa's matrix products, and without
    the pause that spinning (a core, and CPU time of this process) was billed to the pipeline timed next.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    extractor = FeatureExtractor()
    extractor([load_audio(files[0])])  # warm: the numba kernel's first call
    pipelines = {"librosa": kaggle_features, "ours": lambda path: extractor([load_audio(path)])}
    wall, cpu = {name: [] for name in pipelines}, {name: [] for name in pipelines}
    for path in files:
        for name, pipeline in pipelines.items():
            time.sleep(0.3)
            start, start_cpu = time.perf_counter(), time.process_time()
            pipeline(path)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    torch.set_num_threads(threads)
    return {k: 1000 * float(np.mean(v)) for k, v in wall.items()}, {k: 1000 * float(np.mean(v)) for k, v in cpu.items()}


class _Inline:
    """An executor that runs each task when it is submitted."""

    def submit(self, function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future


def feature_profile(files: list[Path], rounds: int = 3) -> None:
    """CPU ms of each stage of ours per clip (median over the clips: other jobs on the host inflate some calls), the
    stages run one after another on one thread (the worker threads' tasks too, so that they do not slow each other
    down), and of the whole calls (mean)."""
    torch.set_num_threads(1)
    extractor = FeatureExtractor()
    extractor.threads = _Inline()
    extractor([load_audio(files[0])])  # warm
    per_clip = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for path in files * rounds:
        extractor.stage_cpu = stages = {"decode": time.thread_time()}
        wave = load_audio(path)
        stages["decode"] = time.thread_time() - stages["decode"]
        extractor([wave])
        per_clip.append(stages)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"profile of ours, CPU ms per 30-s clip by stage (median of {len(per_clip)} clips, 1 torch thread):")
    medians = {name: 1000 * float(np.median([s[name] for s in per_clip])) for name in per_clip[0]}
    for name, ms in medians.items():
        print(f"  {name:36s} {ms:6.2f}")
    print(f"  {'sum of the medians':36s} {sum(medians.values()):6.2f}")
    print(f"  whole calls: CPU {1000 * cpu / len(per_clip):.1f} ms, wall {1000 * wall / len(per_clip):.1f} ms per clip")
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def feature_parity(audio_dir: Path, table: Path) -> None:
    """Per-column error against the published rows, over the clips whose length is the table's (the whole ones)."""
    with open(table) as f:
        rows = {row["filename"]: row for row in csv.DictReader(f)}
    files = [
        p for p in audio_files(audio_dir)[0] if p.name in rows and sf.info(p).frames == int(rows[p.name]["length"])
    ]
    published = np.array([[float(rows[p.name][c]) for c in FEATURE_COLUMNS] for p in files])
    torch.set_num_threads(1)
    extractor = FeatureExtractor()
    pipelines = {
        "ours": np.stack([extractor([load_audio(p)])[0] for p in files]),
        "librosa 0.11 defaults": np.stack([kaggle_features(p) for p in files]),
        "librosa as published": np.stack([kaggle_features(p, as_published=True) for p in files]),
    }
    print(f"parity with {table.name}: {len(files)} whole clips; relative error median / max (abs. error for ~0 means)")
    print(f"{'column':24s}" + "".join(f"{name:>26s}" for name in pipelines))
    for j, column in enumerate(FEATURE_COLUMNS):
        cells = []
        for values in pipelines.values():
            error = np.abs(values[:, j] - published[:, j])
            if column in ("harmony_mean", "perceptr_mean"):
                cells.append(f"abs {np.median(error):8.1e} {error.max():8.1e}")
            else:
                relative = error / np.abs(published[:, j])
                cells.append(f"{np.median(relative):12.1e} {relative.max():8.1e}")
        print(f"{column:24s}" + "".join(f"{cell:>26s}" for cell in cells))
    for name, values in pipelines.items():
        relative = np.abs(values - published) / np.abs(published)
        print(f"all columns, {name}: median relative error {np.median(relative):.1e}")


def train_throughput(model_path: str, batch: int = 32, steps: int = 10) -> float:
    """Crops/s of forward + backward + AdamW for the checkpoint's network, freshly built (BatchNorm unfused)."""
    hp = load_checkpoint(model_path)["hyper_parameters"]
    net = build_network(hp["net"], n_genres=len(hp["genres"])).train().to(memory_format=torch.channels_last)
    crops = torch.rand(batch, 1, hp["spectrogram"]["n_mels"], hp["crop_columns"])
    labels = torch.randint(0, len(hp["genres"]), (batch,))
    optimizer = torch.optim.AdamW(net.parameters())
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(crops), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def long_track(model_path: str, clip: Path, minutes: int = 60) -> tuple[float, float]:
    """Seconds and peak memory (MB) of `commands infer` on a stereo 44.1 kHz flac of `minutes` made from `clip`."""
    wave = sf.read(clip, dtype="float32")[0]
    stereo = np.stack([wave, wave[::-1]], axis=1)
    with tempfile.TemporaryDirectory() as folder:
        track = Path(folder) / "long.flac"
        with sf.SoundFile(track, "w", 44100, 2) as f:
            for _ in range(math.ceil(minutes * 60 / (len(wave) / 22050))):
                f.write(np.repeat(stereo, 2, axis=0))  # 22050 Hz -> 44100 Hz by repetition is enough here
        command = [sys.executable, "-m", "music_genre_classification.commands", "infer", model_path, str(track)]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def cold_start(model_path: str, clip: Path) -> float:
    """Seconds for `commands infer` on one file in a new process: imports, checkpoint, decode, model."""
    command = [sys.executable, "-m", "music_genre_classification.commands", "infer", model_path, str(clip)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


class ReferenceLogMel(LogMel):
    """The front end before it framed the wave by hand: torch.stft, then |X|^2 transposed (the BEFORE figure)."""

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        p = self.params
        wave = wave.to(self.window.dtype)
        stft = torch.stft(wave, p.n_fft, p.hop_length, window=self.window, pad_mode="constant", return_complex=True)
        power = torch.addcmul(stft.real.square(), stft.imag, stft.imag).T
        db = 10 * torch.log10(torch.clamp(self.mel_power(power), min=1e-10))
        db = (db - db.max()).clamp(min=-p.top_db)
        low = db.min()
        spec = (db - low) / -low if low < 0 else torch.zeros_like(db)
        return spec[self.column_frames(wave.shape[-1])].T.contiguous()


def reference_predict_many(classifier: GenreClassifier, paths: list[Path], batch_size: int = 16) -> list:
    """The folder path before the front end ran beside the network (the BEFORE figure): a batch is decoded and
    turned into spectrograms on two threads, then the network runs on it with torch's threads, in turn."""
    from concurrent.futures import ThreadPoolExecutor

    predictions = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(paths), batch_size):
            tracks = list(pool.map(classifier._safe_track, paths[start : start + batch_size]))
            predictions += classifier._predict_tracks([windows for windows, _ in tracks])
    return predictions


def folder_speed(classifier: GenreClassifier, files: list[Path], rounds: int = 3, repeat: int = 1) -> None:
    """Folder clips/s BEFORE (the reference front end and batching) and AFTER, and warm ms per single clip (BEFORE
    and AFTER front end), in turns in one run (the same load on both);
    and that both give the same probabilities. The clips are taken `repeat` times over, for rounds of a few seconds."""
    files = files * repeat
    before = GenreClassifier(classifier.model)
    if isinstance(classifier.front_end, LogMel):
        before.front_end = ReferenceLogMel(classifier.front_end.params)
    ways = {
        "BEFORE (decode a batch, then the model)": lambda: reference_predict_many(before, files),
        "AFTER (front end beside the model)": lambda: [p for _, p, _ in classifier.predict_many(files)],
    }
    rates, cpu = {name: [] for name in ways}, {name: [] for name in ways}
    results = {name: way() for name, way in ways.items()}  # warm, and the predictions to compare
    for _ in range(rounds):
        for name, way in ways.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            way()
            rates[name].append(len(files) / (time.perf_counter() - start))
            cpu[name].append((time.process_time() - start_cpu) / len(files) * 1000)
    rate_before, rate_after = (np.median(r) for r in rates.values())
    print(f"infer, folder of {len(files)} clips (batches of 16), median of {rounds} rounds taken in turns:")
    for name, r in rates.items():
        rounds_text = ", ".join(f"{x:.1f}" for x in r)
        print(f"  {name:42s} {np.median(r):6.1f} clips/s, CPU {np.median(cpu[name]):.1f} ms/clip ({rounds_text})")
    print(f"  speed-up: {rate_after / rate_before:.2f}x")
    (b, a) = ([list(p.probabilities.values()) for p in r] for r in results.values())
    print(f"  max |probability difference| between the two: {np.abs(np.array(a) - np.array(b)).max():.2e}")
    single = {"BEFORE": [], "AFTER": []}
    for path in files[:10] * 3:  # the first round: warm-up
        for name, one in (("BEFORE", before), ("AFTER", classifier)):
            start = time.perf_counter()
            one.predict(path)
            single[name].append(time.perf_counter() - start)
    ms = {name: np.median(times[10:]) * 1000 for name, times in single.items()}
    print(f"infer, one clip (decode + log-mel + model), warm, median of 20: BEFORE {ms['BEFORE']:.1f} ms, ", end="")
    print(f"AFTER {ms['AFTER']:.1f} ms")
    load, threads = os.getloadavg()[0], torch.get_num_threads()
    print(f"  (load average {load:.1f} on {os.cpu_count()} CPUs; torch threads {threads})")


def whole_clips(audio_dir: str, clips: int) -> list[Path]:
    """The first `clips` audio files of `audio_dir` that last the whole 30 s."""
    files = [p for p in audio_files(Path(audio_dir))[0] if sf.info(p).duration >= 29.9][:clips]
    if not files:
        raise SystemExit(f"error: no 30-s audio clips in {audio_dir}")
    return files


def main(
    model_path: str = "outputs/model_full.ckpt",
    audio_dir: str = "data/dataset/genres_original",
    clips: int = 30,
    features: bool = False,
    table: str = "data/dataset/features_30_sec.csv",
    profile: bool = False,
    folder: bool = False,
    output: str | None = None,
):
    """All figures; --features: only the 57 GTZAN features (speed beside librosa, parity with --table); --profile:
    only the CPU time of each stage of ours; --folder: only folder clips/s before and after, and one clip's ms."""
    with Results(output, "benchmark"):
        classifier = None if features or profile else GenreClassifier.from_checkpoint(model_path, device="cpu")
        files = whole_clips(audio_dir, clips)
        if profile:
            return feature_profile(files[:5])
        if folder:
            print(f"clips: {len(files)} whole 30-s clips from {audio_dir}")
            return folder_speed(classifier, files, rounds=5, repeat=4)
        print(f"clips: {len(files)} whole 30-s clips from {audio_dir} (torch threads: {torch.get_num_threads()})")
        try:
            wall, cpu = feature_speed(files[:5])
            print(
                f"57 GTZAN features, one clip at a time (decode included, 1 torch thread), 5 clips in turn: librosa "
                f"{wall['librosa']:.0f} ms/clip, ours {wall['ours']:.0f} ms/clip -> "
                f"{wall['librosa'] / wall['ours']:.1f}x "
                f"faster (CPU time {cpu['librosa']:.0f} vs {cpu['ours']:.0f} ms: {cpu['librosa'] / cpu['ours']:.1f}x)"
            )
            if features:
                feature_parity(Path(audio_dir), Path(table))
        except ImportError:
            print("librosa is not installed: pip install librosa for the feature comparison")
        if classifier is None:
            return
        folder_speed(classifier, files)
        print(
            f"infer, cold CLI, one file:   {min(cold_start(model_path, files[0]) for _ in range(3)):.2f} s (best of 3)"
        )
        seconds, peak_mb = long_track(model_path, files[0])
        print(f"infer, 1-hour stereo 44.1 kHz flac: {seconds:.1f} s, peak memory {peak_mb:.0f} MB (whole CLI process)")
        print(f"training throughput:         {train_throughput(model_path):.0f} crops/s (batch 32)")


if __name__ == "__main__":
    fire.Fire(main)

"""Speed figures: python -m music_genre_classification.benchmark --model_path outputs/model_full.ckpt

Prints warm per-clip inference time (decode + spectrogram + model), folder throughput, cold CLI start, the Kaggle
57-feature librosa pipeline on the same clips for comparison, and training throughput in crops/s.
"""

import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import soundfile as sf
import torch
from hydra.utils import instantiate

from music_genre_classification.serving.inference import GenreClassifier, audio_files, load_checkpoint


def kaggle_features(path: Path) -> np.ndarray:
    """The seeds' 57 features: chroma, rms, centroid, bandwidth, rolloff, zcr, harmonic/percussive, tempo, 20 MFCC."""
    import librosa

    y, sr = librosa.load(path, sr=22050)
    feats = [
        librosa.feature.chroma_stft(y=y, sr=sr),
        librosa.feature.rms(y=y),
        librosa.feature.spectral_centroid(y=y, sr=sr),
        librosa.feature.spectral_bandwidth(y=y, sr=sr),
        librosa.feature.spectral_rolloff(y=y, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        *librosa.effects.hpss(y)[:2],
    ]
    stats = [v for f in feats for v in (np.mean(f), np.var(f))]
    tempo = librosa.feature.tempo(y=y, sr=sr)[0]
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    return np.array([*stats, tempo, *mfcc.mean(1), *mfcc.var(1)])


def train_throughput(model_path: str, batch: int = 32, steps: int = 10) -> float:
    """Crops/s of forward + backward + AdamW for the checkpoint's network, freshly built (BatchNorm unfused)."""
    hp = load_checkpoint(model_path)["hyper_parameters"]
    net = instantiate(hp["net"], n_genres=len(hp["genres"])).train().to(memory_format=torch.channels_last)
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


def whole_clips(audio_dir: str, clips: int) -> list[Path]:
    """The first `clips` audio files of `audio_dir` that last the whole 30 s."""
    files = [p for p in audio_files(Path(audio_dir))[0] if sf.info(p).duration >= 29.9][:clips]
    if not files:
        raise SystemExit(f"error: no 30-s audio clips in {audio_dir}")
    return files


def main(model_path: str = "outputs/model_full.ckpt", audio_dir: str = "data/dataset/genres_original", clips: int = 30):
    classifier = GenreClassifier.from_checkpoint(model_path, device="cpu")
    files = whole_clips(audio_dir, clips)
    passes = []
    for _ in range(2):  # the first pass also reads the files from disk and warms torch up
        start = time.perf_counter()
        for path in files:
            classifier.predict(path)
        passes.append((time.perf_counter() - start) / len(files))
    first, ours = passes
    start = time.perf_counter()
    list(classifier.predict_many(files, batch_size=16))
    folder = len(files) / (time.perf_counter() - start)
    print(f"clips: {len(files)} whole 30-s clips from {audio_dir} (torch threads: {torch.get_num_threads()})")
    print(f"infer, one clip at a time:   {ours * 1000:.1f} ms/clip (decode + spectrogram + model), warm")
    print(f"  first pass, files read from disk: {first * 1000:.1f} ms/clip")
    print(f"infer, folder (batched):     {folder:.1f} clips/s")
    print(f"infer, cold CLI, one file:   {min(cold_start(model_path, files[0]) for _ in range(3)):.2f} s (best of 3)")
    seconds, peak_mb = long_track(model_path, files[0])
    print(f"infer, 1-hour stereo 44.1 kHz flac: {seconds:.1f} s, peak memory {peak_mb:.0f} MB (whole CLI process)")
    try:
        start = time.perf_counter()
        for path in files[:5]:
            kaggle_features(path)
        theirs = (time.perf_counter() - start) / 5
        print(f"librosa 57 Kaggle features:  {theirs * 1000:.1f} ms/clip  -> ours is {theirs / ours:.0f}x faster")
    except ImportError:
        print("librosa is not installed: pip install librosa for the feature-pipeline comparison")
    print(f"training throughput:         {train_throughput(model_path):.0f} crops/s (batch 32)")


if __name__ == "__main__":
    fire.Fire(main)

"""Speed figures: python -m music_genre_classification.benchmark --model_path outputs/model_full.ckpt

Prints warm per-clip inference time (decode + spectrogram + model), folder throughput, the Kaggle 57-feature
librosa pipeline on the same clips for comparison, and training throughput in crops/s.
"""

import time
from pathlib import Path

import fire
import numpy as np
import torch

from music_genre_classification.inference import GenreClassifier, audio_files


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


def train_throughput(classifier: GenreClassifier, batch: int = 32, steps: int = 10) -> float:
    net = classifier.net.train()
    crops = torch.rand(batch, 1, classifier.front_end.params.n_mels, classifier.crop)
    labels = torch.randint(0, len(classifier.genres), (batch,))
    optimizer = torch.optim.AdamW(net.parameters())
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(crops), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return batch * steps / (time.perf_counter() - start)


def main(model_path: str = "outputs/model_full.ckpt", audio_dir: str = "data/dataset/genres_original", clips: int = 20):
    classifier = GenreClassifier.from_checkpoint(model_path, device="cpu")
    files = [p for p in audio_files(Path(audio_dir))[0]][:clips]
    classifier.predict(files[0])  # warm up
    start = time.perf_counter()
    for path in files:
        classifier.predict(path)
    ours = (time.perf_counter() - start) / len(files)
    start = time.perf_counter()
    list(classifier.predict_many(files, batch_size=16))
    folder = len(files) / (time.perf_counter() - start)
    print(f"clips: {len(files)} from {audio_dir} (torch threads: {torch.get_num_threads()})")
    print(f"infer, one clip at a time:   {ours * 1000:.1f} ms/clip (decode + spectrogram + model)")
    print(f"infer, folder (batched):     {folder:.1f} clips/s")
    try:
        start = time.perf_counter()
        for path in files[:5]:
            kaggle_features(path)
        theirs = (time.perf_counter() - start) / 5
        print(f"librosa 57 Kaggle features:  {theirs * 1000:.1f} ms/clip  -> ours is {theirs / ours:.0f}x faster")
    except ImportError:
        print("librosa is not installed: pip install librosa for the feature-pipeline comparison")
    print(f"training throughput:         {train_throughput(classifier):.0f} crops/s (batch 32)")


if __name__ == "__main__":
    fire.Fire(main)

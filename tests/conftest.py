"""Shared fixtures: synthetic separable "genres" of real audio files, the real CLI, the real DVC data."""

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from music_genre_classification.data.audio import MIN_DURATION_S

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
GENRES = ["low", "mid", "high"]
SR = 22050
CLIP_S = MIN_DURATION_S + 2.0  # a short clip that the model still judges
# small and fast: a tiny CNN on 32-column crops of short clips (CLIP_S), on the CPU
TRAIN_ARGS = [
    f"datamodule.genres=[{','.join(GENRES)}]",
    "datamodule.crop_columns=32",
    "datamodule.batch_size=8",
    "datamodule.crops_per_clip=8",
    "model.net.channels=[8,16,16,32]",
    "model.eval_hop=16",
    "model.lr=0.01",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=12",  # with 8, the model trained on CLIP_S-long clips took a "high" test clip for "mid"
    "+trainer.enable_progress_bar=false",
]


def tone(genre: str, seed: int, seconds: float = CLIP_S, sr: int = SR) -> np.ndarray:
    """A clip whose spectrum tells its genre: a tune of chords low, mid or high in frequency, plus noise. The notes
    change and fade like a played instrument's, so that it sounds like music to data/music_check.py."""
    rng = np.random.default_rng(seed)
    base = {"low": 110.0, "mid": 700.0, "high": 3000.0}[genre] * rng.uniform(0.9, 1.1)
    t = np.arange(int(seconds * sr)) / sr
    note_s = rng.uniform(0.5, 0.9)
    note = (t // note_s).astype(int)
    steps = rng.choice(
        [1, 9 / 8, 5 / 4, 3 / 2, 5 / 3, 2], size=note[-1] + 1 if len(t) else 1
    )  # a tune within the register
    phase = 2 * np.pi * np.cumsum(base * steps[note]) / sr
    fade = 0.1 + 0.9 * np.exp(-(t % note_s) / note_s * 3)
    wave = fade * sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in (1, 1.5, 2))
    # the noise is drawn at 22050 Hz whatever `sr`, so that every sample rate sounds the same after resampling
    noise_t = np.arange(int(seconds * SR)) / SR
    noise = np.interp(t, noise_t, rng.standard_normal(noise_t.size))
    hit = np.exp(-(t % note_s) / 0.03)  # a drum hit (a burst of the noise) on each note
    return (0.2 * wave + (0.02 + 0.1 * hit) * noise).astype(np.float32)


def encode(wave: np.ndarray, format: str, subtype: str | None = None, sr: int = SR) -> bytes:
    """A waveform as the bytes of an audio file (WAV, FLAC, OGG, MP3...), as soundfile writes it."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format=format, subtype=subtype)
    return buffer.getvalue()


def write_gtzan(root: Path, clips_per_genre: int = 8, seconds: float = CLIP_S) -> Path:
    for g, genre in enumerate(GENRES):
        (root / genre).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_genre):
            sf.write(root / genre / f"{genre}.{i:05d}.wav", tone(genre, 100 * g + i, seconds), SR)
    return root


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line, in its own process, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    command = [sys.executable, "-m", "music_genre_classification.commands", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def feature_rows(genre: str, count: int, seed: int) -> np.ndarray:
    """Rows of the 57 features, each shifted by the genre: together they tell the genres apart."""
    return np.random.default_rng(seed).normal(size=(count, 57)) + 1.5 * GENRES.index(genre)


def write_feature_table(path: Path, clips_per_genre: int, chunks: int = 0, seed: int = 0) -> Path:
    """A features table laid out as features_30_sec.csv, or as features_3_sec.csv with `chunks` rows per clip."""
    from music_genre_classification.data.features import TABLE_COLUMNS

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE_COLUMNS)
        for g, genre in enumerate(GENRES):
            for i in range(clips_per_genre):
                names = [f"{genre}.{i:05d}.{k}.wav" for k in range(chunks)] or [f"{genre}.{i:05d}.wav"]
                for name, row in zip(names, feature_rows(genre, len(names), seed + 100 * g + i)):
                    writer.writerow([name, 66150 if chunks else 661500, *row, genre])
    return path


class Server:
    """The real `serve` command in its own process on a free 127.0.0.1 port; its log and TMPDIR under `folder`."""

    def __init__(self, folder: Path, *args: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp, self.log = folder / "tmp", folder / "server.log"
        self.tmp.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmp)}
        command = [
            sys.executable,
            "-m",
            "music_genre_classification.commands",
            "serve",
            *args,
            "--port",
            str(self.port),
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, workers: int = 1, timeout: float = 120) -> None:
        """Until each worker has logged that its models are loaded."""
        deadline = time.monotonic() + timeout
        while self.log_text().count("ready: ") < workers:
            assert self.process.poll() is None, self.log_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not get ready:\n" + self.log_text()[-3000:]
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text()

    def uploads(self) -> list[Path]:
        """Files in the server's upload folders."""
        return [p for folder in self.tmp.glob("genre-serve-*") for p in folder.iterdir()]

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def wait_for_port(url: str, timeout: float = 60) -> httpx.Response:
    """The first answer of GET {url}/health, polling fast while the port is not open yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"{url}/health", timeout=10)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"nothing answers on {url}"
            time.sleep(0.02)


@pytest.fixture(scope="session")
def synthetic_gtzan(tmp_path_factory) -> Path:
    root = write_gtzan(tmp_path_factory.mktemp("synthetic") / "gtzan")
    (root / "mid" / "mid.broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")  # a corrupt clip
    return root


@pytest.fixture(scope="session")
def trained(synthetic_gtzan, tmp_path_factory) -> dict:
    """One real `train` run (CLI, Hydra, Lightning, MLflow sqlite store) shared by the tests that need a model."""
    work = tmp_path_factory.mktemp("train_run")
    result = run_cli("train", f"datamodule.root={synthetic_gtzan}", *TRAIN_ARGS, cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "work": work,
        "checkpoint": work / "outputs" / "model_full.ckpt",
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


@pytest.fixture(scope="session")
def real_dataset() -> Path:
    """data/dataset of this repo, brought by a real `dvc pull` from ../shared/dvc-store when missing."""
    dataset = REPO / "data" / "dataset"
    if not dataset.is_dir():
        if not (SHARED / "dvc-store").is_dir():
            pytest.skip("no ../shared/dvc-store beside the repo")
        subprocess.run([sys.executable, "-m", "dvc", "pull", "data.dvc"], cwd=REPO, check=True, capture_output=True)
    return dataset


@contextlib.contextmanager
def bot_process(checkpoint: Path, tmp: Path, *args: str):
    """`commands bot` in its own process, long polling a fake Bot API on 127.0.0.1, its temporary files in `tmp`."""
    from fake_telegram import TOKEN, FakeBotAPI

    with FakeBotAPI() as api:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "TELEGRAM_BOT_TOKEN": TOKEN}
        command = [sys.executable, "-m", "music_genre_classification.commands", "bot", str(checkpoint)]
        command += ["--base_url", api.base_url, *args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            api.wait_for(lambda: "setMyCommands" in api.methods() or process.poll() is not None, timeout=120)
            assert process.poll() is None, process.stdout.read()
            yield api
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]


@contextlib.contextmanager
def without_rights():
    """A folder open to all, in which this process has for a while no more rights than an ordinary user: root (as
    here and in CI) can read and write anything, so it becomes `nobody` until the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="mgc-rights-"))
    folder.chmod(0o777)
    root = os.geteuid() == 0
    try:
        if root:
            os.setegid(65534)
            os.seteuid(65534)
        yield folder
    finally:
        if root:
            os.seteuid(0)
            os.setegid(0)
        shutil.rmtree(folder)

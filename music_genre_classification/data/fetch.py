"""Getting the dataset: `dvc pull`, else download the GTZAN archive, unpack, build spectrograms, dvc add + push."""

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from music_genre_classification import GTZAN_GENRES
from music_genre_classification.data.cache import load_spectrograms
from music_genre_classification.data.dataset import DataError, scan_clips
from music_genre_classification.data.spectrogram import SpectrogramParams

CHUNK = 1 << 20


def ensure_data(root: str | Path, data_cfg) -> None:
    """Make `root` exist when it belongs to the DVC-tracked dataset; other folders are the user's own."""
    root, dataset_dir = Path(root), Path(data_cfg.dataset_dir)
    if root.exists() or not root.resolve().is_relative_to(dataset_dir.resolve()):
        return
    if dvc_repository(dataset_dir) is None:  # e.g. the package installed without its checkout: nowhere to pull to
        raise DataError(
            f"{root} is missing and {dataset_dir} is in no DVC repository (a checkout of this project) to pull or "
            "download it into: give your dataset with datamodule.root=/path/to/it, or set MGC_PROJECT_DIR to a checkout"
        )
    print(f"data: {root} is missing; pulling it with DVC ({data_cfg.dvc_target})")
    reason = dvc("pull", str(data_cfg.dvc_target), repository=dvc_repository(dataset_dir))
    if reason is None and root.exists():
        return
    print(f"data: dvc pull did not bring it ({reason or 'not in the pulled data'}); downloading {data_cfg.url}")
    download_data(data_cfg)
    if not root.exists():
        raise DataError(f"{root}: still missing after the download")


def dvc_repository(path: Path) -> Path | None:
    """The DVC repository (a folder holding .dvc/) that `path` is in, whether `path` exists yet or not."""
    path = path.resolve()
    return next((folder for folder in (path, *path.parents) if (folder / ".dvc").is_dir()), None)


def dvc(*args: str, repository: Path | None = None) -> str | None:
    """Run a DVC command in `repository` (whatever the current directory) with its progress shown; None on success,
    else a one-line reason."""
    try:
        command = [sys.executable, "-m", "dvc", *args]
        result = subprocess.run(command, stderr=subprocess.PIPE, text=True, cwd=repository)
    except OSError as err:
        return str(err)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("ERROR")]
    return lines[0] if lines else f"dvc {args[0]} exited with status {result.returncode}"


def download_data(data_cfg, genres: tuple[str, ...] = GTZAN_GENRES) -> Path:
    """Download, verify, unpack into <dataset_dir>/genres_original, build spectrograms, then dvc add + push."""
    dataset_dir = Path(data_cfg.dataset_dir)
    archive = fetch(data_cfg.url, Path(data_cfg.download_dir), data_cfg.sha256)
    staging = dataset_dir.with_name(dataset_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(archive, staging / "genres_original", data_cfg.folder_in_archive, genres)
        build_spectrograms(staging / "genres_original", staging / "spectrograms", genres)
        if dataset_dir.exists():  # a partial dataset is replaced, never mixed with the new one
            shutil.rmtree(dataset_dir)
        staging.replace(dataset_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"data: {dataset_dir} is ready")
    track_with_dvc(dataset_dir)
    return dataset_dir


def fetch(url: str, download_dir: Path, sha256: str) -> Path:
    """Download `url` (resuming a partial download) and check its SHA-256; only a verified file keeps its name."""
    download_dir.mkdir(parents=True, exist_ok=True)
    target = download_dir / Path(url.split("?")[0]).name
    if target.is_file() and file_sha256(target) == sha256:
        print(f"data: using the verified archive {target}")
        return target
    partial = target.with_name(target.name + ".partial")
    done = partial.stat().st_size if partial.exists() else 0
    received = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 206:  # the server ignored the range: start again
                done = 0
            total = done + int(response.headers.get("Content-Length") or 0)
            with (
                open(partial, "ab" if done else "wb") as out,
                tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc="download") as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if received:  # bytes came, then the connection broke: the next run goes on from here
            message = f"download of {url} broke off after {received >> 20} MB ({reason}); run again to resume"
            raise DataError(message) from None
        host = urllib.parse.urlsplit(url).netloc
        raise DataError(
            f"cannot reach {host} to download the dataset ({reason}): the network is missing or the server is down"
        ) from None
    if file_sha256(partial) != sha256:
        partial.unlink()
        raise DataError(f"downloaded archive from {url} has the wrong SHA-256 (corrupt or changed); deleted it")
    partial.replace(target)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(archive: Path, out_dir: Path, folder: str, genres: tuple[str, ...]) -> None:
    """Extract `<folder>/<genre>/<clip>` from a .tar(.gz) or .zip archive into `out_dir/<genre>/<clip>`."""
    extracted = out_dir.parent / "extracted"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(extracted)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(extracted, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(f"{archive}: corrupt archive ({err})") from None
    source = extracted / folder
    missing = [g for g in genres if not (source / g).is_dir()]
    if missing:
        raise DataError(f"{archive}: no {folder}/<genre>/ folders for {', '.join(missing)}")
    out_dir.mkdir(parents=True)
    for genre in genres:
        (source / genre).replace(out_dir / genre)
    shutil.rmtree(extracted)


def build_spectrograms(audio_dir: Path, out_dir: Path, genres: tuple[str, ...], params=SpectrogramParams()) -> None:
    """Spectrogram folder in the format of data/dataset/spectrograms, made with the project's own front end."""
    clips, specs = load_spectrograms(scan_clips(audio_dir, list(genres)), params, cache_dir=None)
    for clip, spec in zip(clips, specs):
        (out_dir / clip.genre).mkdir(parents=True, exist_ok=True)
        np.save(out_dir / f"{clip.id}.npy", spec.numpy().astype(np.float16))
    description = {
        "description": "log-mel spectrograms, one float16 array [n_mels, frames] per clip, <genre>/<clip>.npy",
        "sample_rate": params.sample_rate,
        "n_fft": params.n_fft,
        "hop_length": params.hop_length,
        "n_mels": params.n_mels,
        "power_to_db": {"ref": "max", "top_db": params.top_db},
        "normalization": "per clip min-max to [0, 1]: (db - db.min()) / (0 - db.min())",
        "frames": params.window_columns,
        "frame_selection": "column c = hop frame floor((c + 0.5) * (T - 1.7) / frames) per 30-s window",
        "clips": len(clips),
    }
    (out_dir / "params.json").write_text(json.dumps(description, indent=2))


def track_with_dvc(dataset_dir: Path) -> None:
    """dvc add + dvc push of the folder data.dvc tracks; a clear message, not a crash, when that is impossible."""
    tracked, repository = dataset_dir.resolve().parent, dvc_repository(dataset_dir)
    reason = dvc("add", str(tracked), repository=repository)
    if reason is None:
        reason = dvc("push", f"{tracked}.dvc", repository=repository)
        if reason is None:
            print(f"data: {tracked} added to DVC and pushed to the default remote")
            return
    print(f"data: kept {tracked} locally but could not version it with DVC ({reason}); run `dvc push` later")

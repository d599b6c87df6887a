"""Data through real DVC (temp git repo + local remote) and the download fallback against a 127.0.0.1 server."""

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import SR, tone
from omegaconf import OmegaConf

from music_genre_classification import GTZAN_GENRES
from music_genre_classification.data.audio import MIN_DURATION_S
from music_genre_classification.data.dataset import DataError
from music_genre_classification.data.fetch import ensure_data, fetch


def sh(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def dvc(*args: str, cwd: Path) -> None:
    sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git + DVC repo whose default remote is an empty local folder."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo)
    monkeypatch.chdir(repo)
    return repo


def data_cfg(url: str, sha256: str) -> OmegaConf:
    return OmegaConf.create(
        {
            "dvc_target": "data.dvc",
            "dataset_dir": "data/dataset",
            "url": url,
            "sha256": sha256,
            "folder_in_archive": "genres",
            "download_dir": ".cache/downloads",
        }
    )


def gtzan_archive() -> bytes:
    """A small archive in GTZAN's layout: genres/<genre>/<genre>.00000.au, MIN_DURATION_S per clip (the shortest judged)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, genre in enumerate(GTZAN_GENRES):
            clip = io.BytesIO()
            sf.write(
                clip, tone(["low", "mid", "high"][i % 3], i, seconds=MIN_DURATION_S), SR, format="AU", subtype="PCM_16"
            )
            info = tarfile.TarInfo(f"genres/{genre}/{genre}.00000.au")
            info.size = clip.getbuffer().nbytes
            tar.addfile(info, io.BytesIO(clip.getvalue()))
    return buffer.getvalue()


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files from a folder, honouring `Range: bytes=N-` as a real mirror does."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_dvc_pull_materialises_tracked_data(repo, tmp_path):
    clip = repo / "data" / "dataset" / "spectrograms" / "blues" / "blues.00000.npy"
    clip.parent.mkdir(parents=True)
    np.save(clip, np.ones((128, 387), np.float16))
    dvc("add", "data", cwd=repo)
    dvc("push", cwd=repo)
    subprocess.run(["rm", "-rf", "data", ".dvc/cache"], cwd=repo, check=True)

    ensure_data("data/dataset/spectrograms", data_cfg("http://127.0.0.1:9/unused.tar.gz", "0"))
    assert np.load(clip).shape == (128, 387)


def test_fallback_downloads_unpacks_builds_spectrograms_and_pushes(repo, server, tmp_path, capsys):
    served, url = server
    archive = gtzan_archive()
    (served / "genres.tar.gz").write_bytes(archive)
    cfg = data_cfg(f"{url}/genres.tar.gz", hashlib.sha256(archive).hexdigest())

    ensure_data("data/dataset/spectrograms", cfg)
    out = capsys.readouterr().out
    assert "dvc pull did not bring it" in out and "added to DVC and pushed" in out
    spectrograms = repo / "data" / "dataset" / "spectrograms"
    assert len(list(spectrograms.rglob("*.npy"))) == 10 and (spectrograms / "params.json").is_file()
    assert np.load(spectrograms / "jazz" / "jazz.00000.npy").shape[0] == 128
    assert (repo / "data" / "dataset" / "genres_original" / "rock" / "rock.00000.au").is_file()
    assert (repo / "data.dvc").is_file() and any((tmp_path / "remote").rglob("*"))  # versioned and pushed
    assert not (repo / "data" / "dataset.staging").exists()


def test_interrupted_download_resumes(server, tmp_path):
    served, url = server
    archive = gtzan_archive()
    (served / "genres.tar.gz").write_bytes(archive)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "genres.tar.gz.partial").write_bytes(archive[: len(archive) // 2])
    path = fetch(f"{url}/genres.tar.gz", tmp_path / "dl", hashlib.sha256(archive).hexdigest())
    assert path.read_bytes() == archive and not (tmp_path / "dl" / "genres.tar.gz.partial").exists()


def test_wrong_checksum_is_reported_and_nothing_is_kept(repo, server):
    served, url = server
    (served / "genres.tar.gz").write_bytes(gtzan_archive())
    with pytest.raises(DataError, match="wrong SHA-256"):
        ensure_data("data/dataset/spectrograms", data_cfg(f"{url}/genres.tar.gz", "0" * 64))
    assert not (repo / "data").exists() and not list((repo / ".cache" / "downloads").iterdir())


def test_truncated_archive_is_detected_and_nothing_half_written_is_left(repo, server):
    served, url = server
    truncated = gtzan_archive()[:3000]
    (served / "genres.tar.gz").write_bytes(truncated)
    with pytest.raises(DataError, match="corrupt archive"):
        ensure_data(
            "data/dataset/spectrograms", data_cfg(f"{url}/genres.tar.gz", hashlib.sha256(truncated).hexdigest())
        )
    assert not (repo / "data" / "dataset").exists() and not (repo / "data" / "dataset.staging").exists()


def test_server_down_is_a_clear_error(repo):
    with pytest.raises(DataError, match="^cannot reach 127.0.0.1:9 to download the dataset .*: the network is missing"):
        ensure_data("data/dataset/spectrograms", data_cfg("http://127.0.0.1:9/genres.tar.gz", "0" * 64))


def test_folders_outside_the_tracked_dataset_are_never_fetched(repo, tmp_path):
    ensure_data(tmp_path / "my-music", data_cfg("http://127.0.0.1:9/x.tar.gz", "0"))  # no DVC, no download
    assert not (repo / "data").exists()

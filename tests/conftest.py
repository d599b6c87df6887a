"""Shared fixtures: synthetic separable "genres" of real audio files, one real training run, the real DVC data.

What the tests share besides fixtures is in the `helpers` package (tests/helpers).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.audio import write_gtzan
from helpers.processes import REPO, SHARED, TRAIN_ARGS, run_cli, run_in_process


@pytest.fixture(scope="session")
def synthetic_gtzan(tmp_path_factory) -> Path:
    root = write_gtzan(tmp_path_factory.mktemp("synthetic") / "gtzan")
    (root / "mid" / "mid.broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")  # a corrupt clip
    return root


@pytest.fixture(scope="session")
def trained(synthetic_gtzan, tmp_path_factory) -> dict:
    """One real `train` run (CLI, Hydra, Lightning, MLflow sqlite store) shared by the tests that need a model."""
    work = tmp_path_factory.mktemp("train_run")
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # run as a user does from any directory: it stays empty
    folders = [f"output_dir={work / 'outputs'}", f"datamodule.cache_dir={work / '.cache' / 'spectrograms'}"]
    environment = {"MGC_PROJECT_DIR": ""}  # the checkout's project folder, where nothing is written with `folders`
    result = run_cli(
        "train", f"datamodule.root={synthetic_gtzan}", *TRAIN_ARGS, *folders, cwd=elsewhere, env=environment
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "work": work,
        "cwd": elsewhere,
        "checkpoint": work / "outputs" / "model_full.ckpt",
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


@pytest.fixture(scope="session")
def tested(trained) -> dict:
    """One real `test` run of the session's checkpoint, in its own process, shared by the tests that read what it
    printed and wrote (<checkpoint>.test.json, the reliability plot, the test metrics in the training's MLflow run)."""
    result = run_cli("test", str(trained["checkpoint"]), cwd=trained["work"])
    assert result.returncode == 0, result.stderr[-2000:]
    return {"stdout": result.stdout, "report": trained["checkpoint"].resolve().with_suffix(".test.json")}


@pytest.fixture
def cli_in_process(capfd):
    """`run_cli` in this process (helpers.processes.run_in_process), its output captured at the file descriptors."""
    return lambda *args, cwd, env=None: run_in_process(*args, cwd=cwd, env=env, capfd=capfd)


@pytest.fixture(scope="session")
def real_dataset() -> Path:
    """data/dataset of this repo, brought by a real `dvc pull` from ../shared/dvc-store when missing. Without that
    remote the real-data tests skip on a workstation, and fail in CI (CI set): there they must run."""
    dataset = REPO / "data" / "dataset"
    if not dataset.is_dir():
        if not (SHARED / "dvc-store").is_dir():
            message = f"no data/dataset and no DVC remote at {SHARED / 'dvc-store'} for `dvc pull`"
            if os.environ.get("CI"):
                pytest.fail(f"{message}: CI must run the real-data tests", pytrace=False)
            pytest.skip(message)
        subprocess.run([sys.executable, "-m", "dvc", "pull", "data.dvc"], cwd=REPO, check=True, capture_output=True)
    return dataset

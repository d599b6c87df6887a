"""`train` then `test` through the real CLI on separable synthetic audio."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
import torch
from helpers.audio import GENRES, SR, tone
from helpers.processes import REPO, TRAIN_ARGS, run_cli


def test_train_learns_and_test_reports_per_clip_metrics(trained, tested):
    assert "best checkpoint:" in trained["stdout"] and "val/acc=" in trained["stdout"]
    assert "skipped 1 unreadable clip(s): mid.broken.wav" in trained["stdout"]  # one warning line, no crash

    assert "confusion (rows: true, columns: predicted)" in tested["stdout"]
    report = json.loads(tested["report"].read_text())
    assert report["accuracy"] >= 0.8  # chance is 1/3
    assert report["macro_f1"] >= 0.75
    assert set(report["per_genre"]) == set(GENRES) and report["clips"] == sum(
        r["support"] for r in report["per_genre"].values()
    )
    assert len(report["confusion"]["matrix"]) == 3


def test_run_directory_holds_config_split_checkpoint_and_plots(trained):
    ckpt = trained["checkpoint"]
    assert ckpt.is_symlink()
    run_dir = ckpt.resolve().parent.parent
    assert run_dir.parent.parent == trained["work"] / "outputs"  # outputs/<date>/<time>/
    assert (run_dir / "config.yaml").is_file()
    assert {p.name for p in (run_dir / "plots").glob("*.png")} >= {
        "curve_loss.png",
        "curve_acc.png",
        "confusion_val.png",
    }
    rows = list(csv.DictReader(open(run_dir / "split.csv")))
    assert {r["part"] for r in rows} == {"train", "val", "test"}
    assert len({r["clip"] for r in rows}) == len(rows) == 24  # by clip, the corrupt clip left out


def test_mlflow_store_has_params_metrics_and_artifacts(trained):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{trained['work'] / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("music-genre-classification")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model/net/_target_"] == "music_genre_classification.models.networks.GenreCNN"
    assert run.data.params["datamodule/crop_columns"] == "32"
    for key in ("train/loss", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1"):
        assert len(client.get_metric_history(run.info.run_id, key)) >= 2, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "split.csv", "confusion_val.png", "curve_loss.png"} <= artifacts


def test_checkpoint_alone_is_enough_to_test(trained, tested, tmp_path, cli_in_process):
    alone = tmp_path / "model.ckpt"
    shutil.copy(trained["checkpoint"].resolve(), alone)
    ckpt = torch.load(alone, weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["genres"] == GENRES and hp["spectrogram"]["n_mels"] == 128
    assert hp["run_config"]["datamodule"]["crop_columns"] == 32
    assert {row["part"] for row in ckpt["split_table"]} == {"train", "val", "test"}
    run_val = json.loads((trained["checkpoint"].resolve().parent.parent / "val_metrics.json").read_text())
    assert ckpt["val_metrics"] == pytest.approx({k: run_val[k] for k in ("val/loss", "val/acc", "val/f1")})
    result = cli_in_process("test", str(alone), cwd=tmp_path)  # no run dir, no overrides, another working dir
    assert result.returncode == 0, result.stderr[-2000:]
    original = json.loads(tested["report"].read_text())
    assert json.loads(alone.with_suffix(".test.json").read_text())["accuracy"] == original["accuracy"]


def test_test_scores_other_labelled_data_with_split_all(trained, tmp_path, cli_in_process):
    from helpers.audio import write_gtzan

    other = write_gtzan(tmp_path / "other", clips_per_genre=3)
    result = cli_in_process("test", trained["checkpoint"], f"datamodule.root={other}", "split=all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "clips 9 " in result.stdout
    written = list(trained["checkpoint"].resolve().parent.glob("*.test_other_all.json"))
    assert json.loads(written[0].read_text())["accuracy"] >= 0.66


def test_without_val_clips_training_runs_every_epoch_and_keeps_the_last(synthetic_gtzan, tmp_path, cli_in_process):
    args = [a for a in TRAIN_ARGS if not a.startswith("trainer.max_epochs")]
    split = ["split.train=0.8", "split.val=0", "split.test=0.2"]
    root = f"datamodule.root={synthetic_gtzan}"
    result = cli_in_process("train", root, *args, *split, "trainer.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no val clips" in result.stdout and "validation:      none" in result.stdout
    ckpt = tmp_path / "outputs" / "model_full.ckpt"
    assert ckpt.resolve().name == "epoch001.ckpt"  # the last of 2 epochs, no early stopping
    run_dir = ckpt.resolve().parent.parent
    assert {r["part"] for r in csv.DictReader(open(run_dir / "split.csv"))} == {"train", "test"}
    assert (run_dir / "plots" / "curve_loss.png").is_file()
    tested = cli_in_process("test", ckpt, cwd=tmp_path)
    assert tested.returncode == 0 and json.loads(ckpt.resolve().with_suffix(".test.json").read_text())["clips"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "trainer.accelerator=quantum"], "error: cannot build lightning.pytorch.Trainer"),
        (["train", "model.net.dropout=abc"], "error: cannot build music_genre_classification.models.lightning_module"),
        (["train", "model=nonexistent"], "error: bad config override"),
        (["train", "trainer.no_such_key=1"], "error: bad config override"),
        (["train", "logger=null"], "to turn a config group off, delete it: ~logger"),
        (["test", "missing.ckpt"], "error: missing.ckpt: no such checkpoint"),
        (["test", "CKPT", "datamodule.batch_size=0"], "error: bad config override"),  # test takes root and cache_dir
        (["test", "CKPT", "trainer.accelerator=quantum"], "error: bad config override"),  # and runs no Trainer
    ],
)
def test_bad_input_gives_one_line_error_and_nonzero_exit(trained, tmp_path, cli_in_process, args, message):
    # in this process but for one `train` and one `test` error, which check the console entry point itself
    run = run_cli if args in (["train", "trainer.accelerator=quantum"], ["test", "missing.ckpt"]) else cli_in_process
    result = run(*[str(trained["checkpoint"]) if a == "CKPT" else a for a in args], cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_empty_dataset_folder_is_a_clear_error(tmp_path, cli_in_process):
    (tmp_path / "empty").mkdir()
    result = cli_in_process("train", f"datamodule.root={tmp_path / 'empty'}", *TRAIN_ARGS, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no clips found" in result.stderr


def test_not_a_checkpoint_is_a_clear_error(tmp_path, cli_in_process):
    (tmp_path / "fake.ckpt").write_text("hello")
    result = cli_in_process("test", "fake.ckpt", cwd=tmp_path)
    assert result.returncode == 1 and "not a readable checkpoint" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes_agrees_across_ranks(synthetic_gtzan, tmp_path):
    args = [a for a in TRAIN_ARGS if not a.startswith("trainer.max_epochs")]
    result = run_cli(
        "train",
        f"datamodule.root={synthetic_gtzan}",
        *args,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "~logger",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = {p.parent for p in Path(tmp_path, "outputs").rglob("rank0.json")}
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["parameters_sha1"] == ranks[1]["parameters_sha1"]  # DDP kept the replicas identical
    assert ranks[0]["val/acc"] == ranks[1]["val/acc"] and ranks[0]["val/loss"] == ranks[1]["val/loss"]


def test_new_artists_recipe_composes_artist_disjoint_val_mixup_and_no_early_stopping(tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from music_genre_classification.config import compose
    from music_genre_classification.training.train import History, make_trainer

    cfg = compose("train", ["experiment=new_artists", f"run_dir={tmp_path}"])
    split = instantiate(cfg.split)
    assert split.name == "fault_filtered" and split.artists["blues/blues.00000"] == "john lee hooker"
    assert cfg.model.mixup == 0.3
    callbacks = make_trainer(cfg, None, History(), validate=True).callbacks
    assert not any(isinstance(c, EarlyStopping) for c in callbacks)
    assert [c.monitor for c in callbacks if isinstance(c, ModelCheckpoint)] == ["val/loss"]


@pytest.mark.parametrize(
    ("command", "damage", "message"),
    [
        ("infer", lambda ckpt: ckpt["hyper_parameters"].pop("net"), "no 'net' in its hyper-parameters"),
        ("infer", lambda ckpt: ckpt["hyper_parameters"]["genres"].append("polka"), "size mismatch for head"),
        ("test", lambda ckpt: ckpt["hyper_parameters"]["genres"].append("polka"), "size mismatch for head"),
        ("infer", lambda ckpt: ckpt["state_dict"].pop("net.features.0.weight"), "Missing key(s)"),
    ],
    ids=["no net", "a genre more than the weights", "the same for test", "a weight missing"],
)
def test_a_damaged_checkpoint_is_one_line(trained, tmp_path, cli_in_process, command, damage, message):
    ckpt = torch.load(trained["checkpoint"], weights_only=True)
    damage(ckpt)
    torch.save(ckpt, tmp_path / "damaged.ckpt")
    sf.write(tmp_path / "a.wav", tone("low", 1), SR)
    args = ["test", "damaged.ckpt"] if command == "test" else ["infer", "damaged.ckpt", "a.wav"]
    result = cli_in_process(*args, cwd=tmp_path)
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert line.startswith("error: damaged.ckpt: damaged or incompatible checkpoint") and message in line


@pytest.mark.parametrize("source", ["audio", "spectrograms"])
def test_clip_length_table_scores_crops_of_test_clips(trained, synthetic_gtzan, tmp_path, source):
    from music_genre_classification.data.fetch import build_spectrograms

    spectrograms = tmp_path / "spectrograms"
    if source == "spectrograms":  # the toy clips as a spectrogram folder, made by the front end
        build_spectrograms(synthetic_gtzan, spectrograms, tuple(GENRES))
    command = [sys.executable, "-m", "studies.clip_length", "--model_path"]
    command += [str(trained["checkpoint"]), "--source", source, "--audio_dir", str(synthetic_gtzan)]
    command += ["--spec_dir", str(spectrograms), "--part", "test", "--lengths", "[1,3]"]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    test_clips = sum(
        row["part"] == "test" for row in torch.load(trained["checkpoint"], weights_only=True)["split_table"]
    )
    check, table = result.stdout.split(f"{test_clips} clips of the test part")
    rows = {
        m[1]: (int(m[2]), float(m[3])) for m in re.finditer(r"^\s*(\S+(?: s| clip)) +(\d+) +\d+ +([\d.]+)", table, re.M)
    }
    assert rows["1 s"][0] == rows["3 s"][0] == 3 * test_clips and rows["whole clip"][0] == test_clips
    assert rows["whole clip"][1] >= 0.8  # the toy genres are easy on whole clips
    if source == "spectrograms":  # columns cut from the stored spectrograms are near the front end on that audio
        assert "front-end check on 24 clips" in check  # every readable toy clip has its audio
        found = {
            m[1]: (float(m[2]), m[3])
            for m in re.finditer(r"^\s*(\S+(?: s| clip)) +\d+ +([\d.]+) +[\d.]+ +([\d.]+|-) ", check, re.M)
        }
        assert found.keys() == {"1 s", "3 s", "whole clip"} and found["whole clip"][0] < 0.002  # float16 storage
        # as near as the audio one hop (23 ms) later: the stored columns lie on another grid of hop frames
        assert all(cut < 0.05 and cut < 1.5 * float(hop) for cut, hop in (found["1 s"], found["3 s"])), found

"""The architectures of `model=`, temperature scaling, bootstrap intervals and the per-epoch lines, through the real
CLI where a user meets them (train, test, ensemble, infer), on separable synthetic audio."""

import json

import mlflow
import numpy as np
import pytest
import torch
from helpers.processes import TRAIN_ARGS, run_cli

from music_genre_classification.config import UserError, build, compose
from music_genre_classification.models.calibration import (
    ece_of_a_calibrated_model,
    expected_calibration_error,
    fit_temperature,
    temperature_scaled,
)
from music_genre_classification.models.networks import for_inference
from music_genre_classification.training.uncertainty import bootstrap_intervals

SMALL = {  # a few small layers each: the interface, not the accuracy, is under test here
    "cnn": ["model.net.channels=[8,16]"],
    "cnn1d": ["model.net.channels=[16,16]"],
    "crnn": ["model.net.channels=[8,8]", "model.net.hidden=8"],
    "lstm": ["model.net.hidden=8", "model.net.layers=1"],
    "resnet": ["model.net.channels=[8,8,16]"],
}


@pytest.mark.parametrize("n_mfcc", [0, 20])
@pytest.mark.parametrize("model", list(SMALL))
def test_every_architecture_shares_the_network_interface(model, n_mfcc):
    cfg = compose("train", [f"model={model}", *SMALL[model], f"model.net.n_mfcc={n_mfcc}"])
    net = build(cfg.model.net, n_genres=3)
    assert net(torch.rand(4, 1, 128, 32)).shape == (4, 3)  # training crops
    net = for_inference(net)
    specs = torch.rand(2, 128, 100)  # two clips of 100 columns, crops of 32 every 16
    with torch.inference_mode():
        embeddings = net.crop_embeddings(specs, 32, 16)
        assert len(embeddings) == 2 and embeddings.shape[1] >= 5 and embeddings.ndim == 3  # [clips, crops, dim]
        assert torch.allclose(net.head(embeddings), net.crop_logits(specs, 32, 16))


def test_temperature_fitted_on_overconfident_probabilities_lowers_calibration_error():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    scores = rng.normal(size=(2000, 5)) + 1.5 * np.eye(5)[labels]  # the true genre scores 1.5 higher on average
    honest = np.exp(1.5 * scores) / np.exp(1.5 * scores).sum(1, keepdims=True)  # the exact posterior of that
    overconfident = temperature_scaled(honest, 0.4)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(1 / 0.4, rel=0.15)
    calibrated = temperature_scaled(overconfident, temperature)
    assert expected_calibration_error(calibrated, labels) < 0.03 < expected_calibration_error(overconfident, labels)
    assert (calibrated.argmax(1) == overconfident.argmax(1)).all()  # accuracy unchanged
    assert np.allclose(temperature_scaled(calibrated, 1 / temperature), overconfident, atol=1e-6)  # exact inverse
    # on a test set of GTZAN's size, even calibrated probabilities show an ECE well above 0: the bins hold few clips
    assert ece_of_a_calibrated_model(honest[:197]) > 2 * ece_of_a_calibrated_model(honest) > 0


def test_bootstrap_over_artists_is_wider_than_over_clips_when_an_artist_is_all_right_or_all_wrong():
    artists = [f"artist{i // 5}" for i in range(200)]  # 40 artists of 5 clips
    labels = np.arange(200) % 4
    wrong = np.array([int(a.removeprefix("artist")) % 3 == 0 for a in artists])
    predicted = np.where(wrong, (labels + 1) % 4, labels)
    by_clip = bootstrap_intervals(labels, predicted, 4)
    by_artist = bootstrap_intervals(labels, predicted, 4, artists)
    accuracy = 1 - wrong.mean()
    for result in (by_clip, by_artist):
        low, high = result["accuracy_ci95"]
        assert low < accuracy < high
    assert by_artist["bootstrap"] == {"resampled": "artists", "units": 40, "resamples": 2000}
    width = lambda r: r["accuracy_ci95"][1] - r["accuracy_ci95"][0]  # noqa: E731
    assert width(by_artist) > 1.5 * width(by_clip)


def test_training_prints_one_line_per_epoch_and_no_tips_and_stores_a_temperature(trained):
    epochs = [line for line in trained["stdout"].splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{i}/12" for i in range(1, 13)]
    assert all("train/loss" in line and "val/acc" in line and line.endswith(" s") for line in epochs)
    output = trained["stdout"] + trained["stderr"]
    for noise in ("Tip", "litlogger", "GPU available", "num_workers", "deprecated", "INFO mlflow", "Creating it"):
        assert noise not in output, noise
    ckpt = torch.load(trained["checkpoint"], weights_only=True)
    assert 0.05 <= ckpt["hyper_parameters"]["temperature"] <= 20
    assert "temperature:" in trained["stdout"]


def test_test_reports_intervals_and_calibration_in_console_json_plot_and_mlflow(trained, tested):
    work, ckpt = trained["work"], trained["checkpoint"]
    assert "95% intervals, bootstrap over" in tested["stdout"] and "clips (2000 resamples)" in tested["stdout"]
    assert "expected calibration error (15 bins)" in tested["stdout"]
    report = json.loads(tested["report"].read_text())
    low, high = report["accuracy_ci95"]
    assert low <= report["accuracy"] <= high and report["macro_f1_ci95"][0] <= report["macro_f1"]
    stored = torch.load(ckpt, weights_only=True)["hyper_parameters"]["temperature"]
    assert report["calibration"]["temperature"] == pytest.approx(stored)
    assert 0 <= report["calibration"]["ece_after"] <= 1 and report["calibration"]["bins"] == 15
    assert ckpt.resolve().with_suffix(".test.reliability.png").stat().st_size > 1000

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("music-genre-classification")
    (run,) = client.search_runs([experiment.experiment_id])  # the training run, not a new one
    assert run.data.metrics["test/accuracy_ci95_low"] == pytest.approx(low)
    assert run.data.metrics["test/ece_after"] == pytest.approx(report["calibration"]["ece_after"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "test")} >= {
        f"test/{ckpt.resolve().with_suffix('.test.json').name}",
        f"test/{ckpt.resolve().with_suffix('.test.reliability.png').name}",
    }


def test_train_with_members_cross_fits_a_crnn_and_a_cnn_on_two_folds_into_one_calibrated_ensemble(
    synthetic_gtzan, tmp_path, cli_in_process
):
    """The mechanism of `train experiment=best`: one training per member, each fold's members validated on clips the
    other fold trains on, then one ensemble whose weights and temperature come from every out-of-fold clip."""
    args = [a for a in TRAIN_ARGS if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=4"]
    crnn = "model=crnn model.net.channels=[8,16] model.net.hidden=16"
    members = f"members=['{crnn} split.fold=0','seed=3 split.fold=0','{crnn} split.fold=1','seed=4 split.fold=1']"
    split = ["split.seed=42", "split.folds=2"]
    result = cli_in_process("train", f"datamodule.root={synthetic_gtzan}", *args, *split, members, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== member 4/4: seed=4 split.fold=1" in result.stdout and "training time:" in result.stdout
    assert "cross-fitted: 2 folds of 2 member(s)" in result.stdout
    blend = torch.load(tmp_path / "outputs" / "model_full.ckpt", weights_only=True)
    hp = blend["hyper_parameters"]
    assert hp["kind"] == "ensemble" and "temperature" in hp and len(hp["weights"]) == 4
    weights = hp["weights"]  # each model's weight shared equally by its two folds
    assert weights[0] == weights[2] and weights[1] == weights[3] and sum(weights) == pytest.approx(1)
    nets = [m["hyper_parameters"]["net"]["_target_"].rsplit(".", 1)[1] for m in blend["members"]]
    assert nets == ["GenreCRNN", "GenreCNN"] * 2
    assert all("temperature" in m["hyper_parameters"] for m in blend["members"])  # members keep theirs
    vals = [{r["clip"] for r in m["split_table"] if r["part"] == "val"} for m in blend["members"]]
    assert vals[0] == vals[1] and not vals[0] & vals[2]  # two folds of val clips
    assert {r["part"] for r in blend["split_table"]} == {"test"}  # the blend's own: the test part all share
    assert blend["val_metrics"]["val/acc"] >= 0.8  # scored on every out-of-fold clip

    result = cli_in_process("test", "outputs/model_full.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp_path / "outputs" / "model_full.ckpt").resolve().with_suffix(".test.json")
    assert json.loads(report.read_text())["accuracy"] >= 0.8
    clip = next((synthetic_gtzan / "high").glob("*.wav"))
    result = cli_in_process("infer", "outputs/model_full.ckpt", clip, cwd=tmp_path)
    assert result.returncode == 0 and "high" in result.stdout, result.stderr[-2000:]


def test_calibrate_refits_the_temperature_of_a_checkpoint_on_its_val_clips(trained, tmp_path, cli_in_process):
    result = run_cli("calibrate", str(trained["checkpoint"]), "--output_path", "calibrated.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val: " in result.stdout and "temperature " in result.stdout
    stored = torch.load(trained["checkpoint"], weights_only=True)["hyper_parameters"]["temperature"]
    refitted = torch.load(tmp_path / "calibrated.ckpt", weights_only=True)["hyper_parameters"]["temperature"]
    assert refitted == pytest.approx(stored, rel=1e-3)  # the same val clips, the same fit as at the end of `train`
    result = cli_in_process("calibrate", trained["checkpoint"], "--output_path", "out.pt", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_experiment_best_is_an_ensemble_of_new_artist_recipes_on_one_split():
    cfg = compose("train", ["experiment=best"])
    assert len(cfg.members) >= 2 and cfg.split.seed == 42 and cfg.split.artists == "GTZANindex.txt"
    member = compose("train", ["experiment=best", *str(cfg.members[1]).split(), "members=null"])
    assert member.members is None and member.split.seed == 42 and member.model.mixup == 0.3
    assert member.callbacks.early_stopping is None and member.split.train == "train_filtered.txt"


def test_ensemble_refuses_members_whose_folds_do_not_match():
    from music_genre_classification.training.ensemble import fold_groups

    def member(net: str, val: list[str]) -> dict:
        table = [{"clip": c, "part": "val" if c in val else "train"} for c in ("a", "b", "c", "d")]
        return {"hyper_parameters": {"net": {"_target_": net}}, "split_table": table}

    cnn, crnn = "GenreCNN", "GenreCRNN"
    folds = [member(cnn, ["a", "b"]), member(crnn, ["a", "b"]), member(cnn, ["c", "d"]), member(crnn, ["c", "d"])]
    assert fold_groups(["m"] * 4, folds) == [[0, 1], [2, 3]]
    swapped = folds[:2] + folds[:1:-1]  # the second fold lists crnn first
    with pytest.raises(UserError, match="same models in the same order"):
        fold_groups(["m"] * 4, swapped)
    with pytest.raises(UserError, match="overlap"):
        fold_groups(["m"] * 2, [member(cnn, ["a", "b"]), member(cnn, ["b", "c"])])

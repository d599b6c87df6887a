"""Features models in process: the model configs, the features table route and its split, the stored pipeline."""

import os

import numpy as np
import pytest
import skops.io
import torch
from helpers.audio import GENRES, feature_rows, write_feature_table
from hydra.utils import instantiate
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from music_genre_classification.config import UserError, build, compose, to_dict
from music_genre_classification.data.dataset import DataError, scan_clips
from music_genre_classification.data.feature_data import FeatureDataModule
from music_genre_classification.data.split import RandomSplit, assign_parts
from music_genre_classification.models.classical import pipeline_from_bytes, pipeline_to_bytes
from music_genre_classification.models.predictors import one_thread

ESTIMATORS = ["logreg", "knn", "svc", "rf", "mlp", "gb"]


@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_features_model_config_builds_fits_and_tunes_on_its_grid(name):
    cfg = compose("train", [f"model=features_{name}", f"datamodule.genres=[{','.join(GENRES)}]"])
    assert cfg.datamodule._target_.endswith("FeatureDataModule")  # the model brings its datamodule
    rows = np.concatenate([feature_rows(g, 30, i) for i, g in enumerate(GENRES)])  # 30: HistGB's leaves hold 20
    labels = np.repeat(np.arange(3), 30)
    grid = list(ParameterGrid(to_dict(cfg.model.grid)))
    assert len(grid) >= 2
    for params in grid[:2]:
        pipeline = build(cfg.model.pipeline, _convert_="all").set_params(**params)
        assert isinstance(pipeline, Pipeline) and [name for name, _ in pipeline.steps][0] == "scale"
        with one_thread():  # as train and the predictors run them
            probs = pipeline.fit(rows, labels).predict_proba(feature_rows("high", 5, 99))
        assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1) and (probs.argmax(1) == 2).mean() >= 0.8


def test_pca_and_other_boosting_libraries_come_from_the_same_config():
    cfg = compose("train", ["model=features_gb", "model.pipeline.pca=0.95"])
    pipeline = build(cfg.model.pipeline, _convert_="all")
    assert pipeline.named_steps["pca"].n_components == 0.95
    assert type(pipeline.named_steps["classifier"]).__name__ == "HistGradientBoostingClassifier"
    cfg = compose("train", ["model=features_gb", "model.pipeline.classifier.library=lightgbm"])
    with pytest.raises(UserError, match="sklearn, xgboost or catboost"):
        build(cfg.model.pipeline, _convert_="all")


@pytest.mark.parametrize("overrides", [[], ["split=fault_filtered"], ["experiment=new_artists"]])
def test_table_and_spectrograms_put_the_same_clips_in_the_same_parts(real_dataset, overrides):
    """The table has jazz.00054 more than the spectrogram set: it is left out, and every other clip matches."""
    cfg = compose("train", overrides)
    clips = scan_clips(real_dataset / "spectrograms", list(cfg.datamodule.genres))
    cnn = assign_parts(instantiate(cfg.split), None, {c.id: c.genre for c in clips}, "spectrograms")
    cfg = compose("train", [*overrides, "model=features_logreg"])
    features = build(cfg.datamodule, split=build(cfg.split), root=str(real_dataset / "features_30_sec.csv"))
    features.setup()
    assert {row["clip"]: row["part"] for row in features.split_table} == cnn
    assert len(cnn) == 639 and set(cnn.values()) == {"train", "val", "test"}


def test_chunks_of_a_clip_stay_in_its_part_and_count_as_one_clip(tmp_path):
    table = write_feature_table(tmp_path / "features_3_sec.csv", clips_per_genre=10, chunks=4)
    data = FeatureDataModule(str(table), GENRES, split=RandomSplit(0.6, 0.2, 0.2), segment_s=3)
    data.setup()
    assert len(data.split_table) == 30 and data.split_table[0]["clip"] == "low/low.00000"
    ids, labels, tracks = data.tracks("val")
    assert len(ids) == 6 and all(len(track) == 1 and track[0][2].shape == (4, 57) for track in tracks)
    rows, row_labels = data.rows("train")
    assert rows.shape == (18 * 4, 57) and np.array_equal(np.bincount(row_labels), [24, 24, 24])

    with pytest.raises(DataError, match="set datamodule.segment_s"):
        FeatureDataModule(str(table), GENRES, split=RandomSplit()).setup()
    whole = write_feature_table(tmp_path / "features_30_sec.csv", clips_per_genre=10)
    with pytest.raises(DataError, match="chunks named"):
        FeatureDataModule(str(whole), GENRES, split=RandomSplit(), segment_s=3).setup()


def test_a_table_without_the_feature_columns_is_a_clear_error(tmp_path):
    (tmp_path / "t.csv").write_text("filename,label,tempo\na.wav,low,120\n")
    with pytest.raises(DataError, match="not a features table"):
        FeatureDataModule(str(tmp_path / "t.csv"), GENRES, split=RandomSplit()).setup()


def test_stored_pipeline_round_trips_and_refuses_code_it_does_not_trust():
    rows = np.concatenate([feature_rows(g, 6, i) for i, g in enumerate(GENRES)])
    cfg = compose("train", ["model=features_rf", "model.pipeline.classifier.n_estimators=20"])
    pipeline = build(cfg.model.pipeline, _convert_="all").fit(rows, np.repeat(np.arange(3), 6))
    loaded = pipeline_from_bytes(pipeline_to_bytes(pipeline))  # holds sklearn's Tree, not trusted by skops alone
    assert np.array_equal(loaded.predict_proba(rows), pipeline.predict_proba(rows))

    evil = skops.io.dumps(Pipeline([("run", FunctionTransformer(os.system))]))
    with pytest.raises(UserError, match="not trusted: .*system"):
        pipeline_from_bytes(evil)
    with pytest.raises(ValueError, match="not a readable stored model"):  # "damaged checkpoint" for its loaders
        pipeline_from_bytes(b"PK\x03\x04 not a zip")


def test_a_chunk_model_reads_each_window_as_gtzan_chunks():
    from helpers.audio import tone

    from music_genre_classification.data.feature_data import FeatureFrontEnd

    window = torch.from_numpy(tone("mid", 1, seconds=30))
    assert FeatureFrontEnd(segment_s=3)(window).shape == (10, 57)  # as features_3_sec.csv cuts a 30-s clip
    assert FeatureFrontEnd()(window).shape == (1, 57)
    assert FeatureFrontEnd(segment_s=3)(window[: 4 * 22050]).shape == (1, 57)  # under two chunks: one

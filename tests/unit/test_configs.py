"""Every model config and every experiment composes from configs/ (Hydra, in process) and builds what it names:
the network, its optimizer and learning-rate schedule, or the scikit-learn pipeline."""

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from music_genre_classification.config import CONFIG_DIR
from music_genre_classification.models.lightning_module import GenreModule

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml") if not p.stem.startswith("_"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
NETWORKS = [
    m for m in MODELS if "- _network" in (CONFIG_DIR / "model" / f"{m}.yaml").read_text()
]  # trained in Lightning


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def check_builds(model) -> None:
    if "pipeline" in model:
        assert hasattr(instantiate(model.pipeline, _convert_="all"), "fit")
        return
    net = instantiate(model.net, n_genres=3)
    assert isinstance(net, torch.nn.Module)
    optimizer = instantiate(model.optimizer)
    assert isinstance(optimizer, functools.partial)
    built = optimizer(net.parameters())
    assert isinstance(built, torch.optim.Optimizer)
    if model.scheduler.get("_target_"):
        schedule = instantiate(model.scheduler, T_max=model.scheduler.T_max or 5)
        assert isinstance(schedule(built), torch.optim.lr_scheduler.LRScheduler)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_composes_and_builds(name):
    cfg = composed(f"model={name}")
    check_builds(cfg.model)
    features = name.startswith("features_")
    assert str(cfg.datamodule._target_).endswith("FeatureDataModule" if features else "GenreDataModule")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name):
    cfg = composed(f"experiment={name}")
    check_builds(cfg.model)
    for member in cfg.get("members") or []:  # each member's overrides compose too
        check_builds(composed(f"experiment={name}", *str(member).split(), "members=null").model)


@pytest.mark.parametrize("name", NETWORKS)
def test_network_configs_share_the_default_optimizer_and_schedule(name):
    model = composed(f"model={name}").model
    assert model.optimizer._target_ == "torch.optim.AdamW"
    assert model.optimizer.lr == (0.01 if name in ("baseline", "musicnn") else 0.001)
    assert model.optimizer.weight_decay == 0.0001
    assert model.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"


def test_optimizer_and_schedule_are_chosen_from_the_command_line():
    model = composed("optimizer@model.optimizer=sgd", "scheduler@model.scheduler=none", "model.optimizer.lr=0.05").model
    assert model.optimizer._target_ == "torch.optim.SGD" and model.optimizer.lr == 0.05
    module = GenreModule(
        OmegaConf.to_container(model.net, resolve=False) | {"n_mels": 16, "channels": [4, 8]},
        genres=["a", "b", "c"],
        spectrogram={},
        crop_columns=16,
        optimizer=OmegaConf.to_container(model.optimizer),
        scheduler=OmegaConf.to_container(model.scheduler),
    )
    built = module.configure_optimizers()  # no schedule: the optimizer alone
    assert isinstance(built, torch.optim.SGD) and built.defaults["lr"] == 0.05

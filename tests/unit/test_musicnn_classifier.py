"""model=musicnn's network: the pretrained backbone behind a differentiable adapter, its shapes, and the two phases of
fine-tuning (the head alone, then the backbone at a fraction of the learning rate)."""

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from music_genre_classification.config import compose
from music_genre_classification.models.lightning_module import GenreModule
from music_genre_classification.models.musicnn import weights_path
from music_genre_classification.models.musicnn_classifier import GenreMusicnn

GENRES = ["low", "mid", "high"]


def model_config(*overrides: str) -> dict:
    cfg = compose("train", ["model=musicnn", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True) | {"spectrogram": dict(cfg.datamodule.spectrogram)}


@pytest.mark.parametrize("pooling,frame_rate,dim", [("mean", "native", 753), ("penultimate", "musicnn", 200)])
def test_shapes_and_the_pretrained_backbone(pooling, frame_rate, dim):
    net = GenreMusicnn(n_genres=3, pooling=pooling, frame_rate=frame_rate).eval()
    stored = load_file(str(weights_path("msd")))
    assert torch.equal(net.backbone.timbral[0].weight, stored["timbral.0.weight"])
    specs = torch.rand(2, 128, 100)
    with torch.no_grad():
        assert net(specs[:, None, :, :40]).shape == (2, 3)
        embeddings = net.crop_embeddings(specs, 40, 20)
        assert embeddings.shape == (2, 4, dim)  # crops at 0, 20, 40, 60
        assert net.crop_logits(specs, 40, 20).shape == (2, 4, 3)
    assert not any(name.startswith("bands.") for name in net.state_dict())  # fixed matrices, never stored


def test_head_first_then_the_backbone_at_a_tenth_of_the_rate():
    config = model_config("model.freeze_epochs=1", "model.optimizer.lr=0.01", "~model.scheduler._target_")
    config.pop("_target_")
    module = GenreModule(genres=GENRES, crop_columns=32, **config)
    lr = config["optimizer"]["lr"]
    crops, labels = torch.rand(8, 1, 128, 32), torch.arange(8) % 3  # one step per epoch
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(crops, labels), batch_size=8)
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})

    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Snapshot()],
    )
    trainer.fit(module, loader)
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([lr, 0.1 * lr])

    def change(after: dict, prefix: str) -> float:
        return max((after[k].float() - before[k].float()).abs().max().item() for k in before if k.startswith(prefix))

    frozen, tuned = snapshots
    assert change(frozen, "backbone.") == 0  # weights and batch-norm statistics kept while the head learns
    assert change(frozen, "head.") > 0
    moved = max(
        (tuned[k] - frozen[k]).abs().max().item() for k in frozen if k.startswith("backbone.") and "weight" in k
    )
    assert 0 < moved <= 3.2 * 0.1 * lr  # one Adam step at the backbone's rate (|step| <= ~3.2 lr)

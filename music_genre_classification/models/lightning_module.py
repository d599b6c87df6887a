"""LightningModule: crop training with SpecAugment, per-clip validation/test, torchmetrics, AdamW + cosine."""

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from music_genre_classification.models.augment import gain_tilt, time_stretch
from music_genre_classification.models.networks import clip_probabilities

STAGES = ("train", "val", "test")


def spec_augment(crops: torch.Tensor, masks: int, freq_width: int, time_width: int) -> torch.Tensor:
    """Zero (the spectrogram's floor) `masks` random frequency bands and time spans per crop."""
    batch, _, mels, columns = crops.shape
    keep = torch.ones_like(crops, dtype=torch.bool)
    for size, width, axis in ((mels, freq_width, 2), (columns, time_width, 3)):
        position = torch.arange(size, device=crops.device).view([1, 1, size, 1] if axis == 2 else [1, 1, 1, size])
        for _ in range(masks):
            widths = torch.randint(0, width + 1, (batch, 1, 1, 1), device=crops.device)
            starts = (torch.rand(batch, 1, 1, 1, device=crops.device) * (size - widths + 1)).long()
            keep &= (position < starts) | (position >= starts + widths)
    return crops * keep


def shift_mels(crops: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Move each crop up or down by up to `max_shift` mel bands (a rough pitch shift), the gap filled with zeros."""
    batch, _, mels, _ = crops.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 1, 1, 1), device=crops.device)
    source = torch.arange(mels, device=crops.device).view(1, 1, mels, 1) - shifts
    inside = (source >= 0) & (source < mels)
    return crops.gather(2, source.clamp(0, mels - 1).expand_as(crops)) * inside


class GenreModule(L.LightningModule):
    def __init__(
        self,
        net: dict,
        genres: list[str],
        spectrogram: dict,
        crop_columns: int = 128,
        eval_hop: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        spec_augment: dict | None = None,
        mixup: float = 0.0,
        mel_shift: int = 0,
        ema: float = 0.0,
        run_config: dict | None = None,
        label_smoothing: float = 0.0,
        gain: float = 0.0,
        tilt: float = 0.0,
        stretch: float = 0.0,
    ):
        """`net` is the model's Hydra config; `spectrogram`, `genres` and `run_config` travel in the checkpoint."""
        super().__init__()
        self.save_hyperparameters(logger=False)
        # channels_last: ~1.3x faster convolutions on a CPU (and the layout GPU tensor cores want)
        self.net = instantiate(net, n_genres=len(genres)).to(memory_format=torch.channels_last)
        # an exponential moving average of the weights (and BatchNorm statistics) for val, test and the checkpoint
        self.ema_net = (
            AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True) if ema else None
        )
        self.split_table: list[dict] | None = None
        n = len(genres)
        for stage in STAGES:  # attributes, not a ModuleDict: "train" would clash with nn.Module.train
            metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro")}
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, prefix=f"{stage}/"))
        self.confusion = torch.nn.ModuleDict({s: MulticlassConfusionMatrix(n) for s in ("val", "test")})
        self.last_confusion: dict[str, torch.Tensor] = {}

    def metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        crops, labels = batch
        if self.hparams.mel_shift:
            crops = shift_mels(crops, self.hparams.mel_shift)
        if self.hparams.get("stretch"):
            crops = time_stretch(crops, self.hparams.stretch)
        if self.hparams.get("gain") or self.hparams.get("tilt"):
            crops = gain_tilt(crops, self.hparams.get("gain", 0.0), self.hparams.get("tilt", 0.0))
        if self.hparams.spec_augment:
            crops = spec_augment(crops, **self.hparams.spec_augment)
        if self.hparams.mixup > 0:  # blend pairs of crops and their labels: a smoother target on little data
            mix = torch.distributions.Beta(self.hparams.mixup, self.hparams.mixup).sample().to(crops.device)
            partner = torch.randperm(len(labels), device=crops.device)
            logits = self.net(mix * crops + (1 - mix) * crops[partner])
            loss = mix * self.loss(logits, labels) + (1 - mix) * self.loss(logits, labels[partner])
        else:
            logits = self.net(crops)
            loss = self.loss(logits, labels)
        self.metrics("train").update(logits, labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log_dict(self.metrics("train"), on_step=False, on_epoch=True)
        return loss

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.get("label_smoothing", 0.0))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema_net is not None:
            self.ema_net.update_parameters(self.net)

    def _clip_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], stage: str) -> None:
        specs, labels = batch
        net = self.ema_net.module if self.ema_net is not None else self.net
        probs = clip_probabilities(net, specs, self.hparams.crop_columns, self.hparams.eval_hop)
        loss = F.nll_loss(probs.clamp_min(1e-8).log(), labels)
        self.metrics(stage).update(probs, labels)
        self.confusion[stage].update(probs, labels)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log_dict(self.metrics(stage), prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._clip_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._clip_step(batch, "test")

    def _store_confusion(self, stage: str) -> None:
        self.last_confusion[stage] = self.confusion[stage].compute().cpu()
        self.confusion[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._store_confusion("val")

    def on_test_epoch_end(self) -> None:
        self._store_confusion("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 100
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["split_table"] = self.split_table
        # the validation scores of the epoch being saved, so that a checkpoint alone says how good it is
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}  # none when saved by hand
        checkpoint["val_metrics"] = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
        state = checkpoint["state_dict"]
        if self.ema_net is not None:  # the averaged weights are the model; inference reads them as net.*
            for key in [k for k in state if k.startswith("ema_net.")]:
                value = state.pop(key)
                if key.startswith("ema_net.module."):
                    state["net." + key.removeprefix("ema_net.module.")] = value

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.split_table = checkpoint.get("split_table")
        if self.ema_net is not None:
            state = checkpoint["state_dict"]
            state |= {"ema_net.module." + k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
            state["ema_net.n_averaged"] = torch.tensor(1)

"""LightningModule: crop training with SpecAugment, per-clip validation, torchmetrics; the optimizer and learning-rate
schedule come from the config (configs/optimizer, configs/scheduler).

`test` scores a checkpoint through its predictor (training/evaluate.py), not through Lightning.
"""

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate  # the optimizer and schedule partials of the training config (never a checkpoint's)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from music_genre_classification.config import UserError
from music_genre_classification.models.allowlist import build_network
from music_genre_classification.models.augment import gain_tilt, time_stretch
from music_genre_classification.models.networks import clip_probabilities

STAGES = ("train", "val")
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 1e-4}


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


def check_class_weights(weights, n_genres: int) -> None:
    if weights is None or weights == "balanced":
        return
    if (
        not isinstance(weights, list | tuple)
        or len(weights) != n_genres
        or not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights)
    ):
        raise ValueError(f"model.class_weights must be balanced, null or {n_genres} numbers >= 0, not {weights!r}")


def load_pretrained(net: torch.nn.Module, path: str, net_config: dict, genres: list[str], spectrogram: dict) -> None:
    """The weights of a CNN checkpoint of this project into `net`; its head too when it has the same genres."""
    from music_genre_classification.models.checkpoint import load_checkpoint
    from music_genre_classification.models.predictors import checkpoint_kind

    ckpt = load_checkpoint(path)
    kind, hp = checkpoint_kind(ckpt), ckpt["hyper_parameters"]
    if kind != "cnn":
        raise UserError(f"{path}: model.init_from needs a network checkpoint (model=cnn), not a {kind} model")
    if hp["net"].get("_target_") != net_config.get("_target_"):
        raise UserError(f"{path}: holds a {hp['net'].get('_target_')}, not the {net_config.get('_target_')} to train")
    if dict(hp["spectrogram"]) != dict(spectrogram):
        raise UserError(f"{path}: trained on other spectrogram settings ({hp['spectrogram']})")
    same_genres = list(hp["genres"]) == list(genres)
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if not same_genres:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = net.state_dict()
    differ = [
        k
        for k in own
        if (same_genres or not k.startswith("head.")) and (k not in state or state[k].shape != own[k].shape)
    ]
    differ += [k for k in state if k not in own]
    if differ:
        raise UserError(f"{path}: its network differs from model.net (at {differ[0]}); set model.net as it was trained")
    net.load_state_dict(state, strict=same_genres)
    head = "its head kept" if same_genres else f"a new head for {len(genres)} genres"
    print(f"model: weights from {path}, {head}")


class GenreModule(L.LightningModule):
    def __init__(
        self,
        net: dict,
        genres: list[str],
        spectrogram: dict,
        crop_columns: int = 128,
        eval_hop: int = 64,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        spec_augment: dict | None = None,
        mixup: float = 0.0,
        mel_shift: int = 0,
        ema: float = 0.0,
        class_weights: str | list[float] | None = None,
        init_from: str | None = None,
        freeze_epochs: int = 0,
        run_config: dict | None = None,
        label_smoothing: float = 0.0,
        gain: float = 0.0,
        tilt: float = 0.0,
        stretch: float = 0.0,
        backbone_lr: float = 1.0,
    ):
        """`net` is the model's Hydra config; `spectrogram`, `genres` and `run_config` travel in the checkpoint.

        `optimizer`, `scheduler`: `_partial_` Hydra configs (configs/optimizer, configs/scheduler), called with the
        parameters and with the optimizer; no optimizer: AdamW(lr=1e-3, weight_decay=1e-4); no scheduler (or one
        without a `_target_`): a constant learning rate. A `T_max` of null becomes the run's epochs.

        `class_weights`: "balanced" (inverse genre frequency in the train part, as scikit-learn's) or one weight
        per genre for the cross-entropy; `init_from`: a CNN checkpoint whose weights start training (fine-tuning),
        its head kept if its genres are these, else a new one; `freeze_epochs`: epochs training only the head (of a
        network that starts trained: init_from, or a pretrained backbone such as model=musicnn's); `backbone_lr`: the
        learning rate of everything but the head, as a fraction of the optimizer's (fine-tuning: e.g. 0.1).
        """
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_class_weights(class_weights, len(genres))
        if isinstance(freeze_epochs, bool) or not isinstance(freeze_epochs, int) or freeze_epochs < 0:
            raise ValueError(f"model.freeze_epochs must be a whole number >= 0, not {freeze_epochs!r}")
        if isinstance(backbone_lr, bool) or not isinstance(backbone_lr, int | float) or not 0 < backbone_lr <= 1:
            raise ValueError(f"model.backbone_lr must be a fraction in (0, 1] of the rate, not {backbone_lr!r}")
        self.net = build_network(net, n_genres=len(genres))
        if freeze_epochs and not (init_from or getattr(self.net, "pretrained", False)):
            raise ValueError(
                "model.freeze_epochs needs a network that starts trained: model.init_from (a checkpoint to start "
                "from) or a pretrained backbone (model=musicnn)"
            )
        if init_from:
            load_pretrained(self.net, init_from, net, genres, spectrogram)
        # channels_last: ~1.3x faster convolutions on a CPU (and the layout GPU tensor cores want); not for a network
        # that says otherwise (musicnn's one-channel convolutions over wide maps train 2x slower in it)
        if getattr(self.net, "channels_last", True):
            self.net = self.net.to(memory_format=torch.channels_last)
        self.loss_weights: torch.Tensor | None = None
        # an exponential moving average of the weights (and BatchNorm statistics) for val and the checkpoint
        self.ema_net = (
            AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True) if ema else None
        )
        self.split_table: list[dict] | None = None
        n = len(genres)
        for stage in STAGES:  # attributes, not a ModuleDict: "train" would clash with nn.Module.train
            metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro")}
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, prefix=f"{stage}/"))
        self.confusion = torch.nn.ModuleDict({"val": MulticlassConfusionMatrix(n)})
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
        smoothing = self.hparams.get("label_smoothing", 0.0)
        return F.cross_entropy(logits, labels, weight=self.loss_weights, label_smoothing=smoothing)

    def on_fit_start(self) -> None:
        weights = self.hparams.class_weights
        if weights == "balanced":
            counts = np.bincount(self.trainer.datamodule.parts["train"][1], minlength=len(self.hparams.genres))
            weights = np.where(counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
        if weights is not None:
            self.loss_weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def on_train_epoch_start(self) -> None:
        """During the first `freeze_epochs` only the head learns; the rest keeps its weights and BatchNorm stats."""
        if not self.hparams.freeze_epochs:
            return
        frozen = self.current_epoch < self.hparams.freeze_epochs
        for name, module in self.net.named_children():
            if name != "head":
                module.train(not frozen)
                module.requires_grad_(not frozen)

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

    def _store_confusion(self, stage: str) -> None:
        self.last_confusion[stage] = self.confusion[stage].compute().cpu()
        self.confusion[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._store_confusion("val")

    def parameter_groups(self) -> list[dict]:
        """The head's parameters, then the rest's (the backbone, learning at `backbone_lr` times the rate)."""
        head = {id(p) for p in self.net.head.parameters()}
        groups = [[p for p in self.parameters() if id(p) in head], [p for p in self.parameters() if id(p) not in head]]
        return [{"params": params} for params in groups if params]

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer or DEFAULT_OPTIMIZER)(self.parameter_groups())
        for group in optimizer.param_groups[1:]:  # the backbone's, before the schedule records its starting rates
            group["lr"] *= self.hparams.get("backbone_lr", 1.0)
        schedule = dict(self.hparams.scheduler or {})
        if not schedule.get("_target_"):
            return optimizer
        if "T_max" in schedule and schedule["T_max"] is None:  # the run's epochs; 100 when they are unlimited
            epochs = self.trainer.max_epochs
            schedule["T_max"] = epochs if epochs and epochs > 0 else 100
        return {"optimizer": optimizer, "lr_scheduler": instantiate(schedule)(optimizer)}

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

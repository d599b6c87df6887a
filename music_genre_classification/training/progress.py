"""What `train` and `test` print: one plain line per epoch when stdout is not a terminal (logs, CI), Lightning's
progress bar when it is; third-party tips and deprecation notes left out."""

import logging
import os
import sys
import time
import warnings

import lightning as L

# notes that say nothing about this run: Lightning's tips, its device summary, loader worker hints, deprecations
NOISE = [
    r".*does not have many workers.*",
    r".*num_workers.*",
    r".*GPU available but not used.*",
    r".*litlogger.*",
    r".*LitLogger.*",
    r".*deprecated.*",
    r".*Deprecat.*",
]


def quiet_third_parties() -> None:
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its loggers' level when imported
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)  # "💡 Tip", "GPU available", mlflow's table creation ...
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)  # "Experiment ... Creating it."


def show_progress_bar() -> bool:
    return sys.stdout.isatty()


class EpochLine(L.Callback):
    """`epoch 3/40  train/loss 1.234  val/loss 0.987  val/acc 0.712  val/f1 0.701  41.2 s` after each epoch."""

    KEYS = ("train/loss", "val/loss", "val/acc", "val/f1")

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        values = "  ".join(f"{k} {float(metrics[k]):.4f}" for k in self.KEYS if k in metrics)
        seconds = time.perf_counter() - self.started
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {values}  {seconds:.1f} s", flush=True)

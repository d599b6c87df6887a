"""model=musicnn (the backbone fine-tuned) against the frozen backbone's probe, on artists never heard in training.

Both train on the new-artist split (fault-filtered lists, artist index, mixup 0.3 for the network as
`experiment=new_artists`) and are judged on its artist-disjoint val part (87 clips); the test part is not read. The
fine-tuning budget is small (the musicnn front end costs ~0.3 CPU-seconds per 10-s crop and step on 2 CPU cores), so
`--epochs` and `--crops_per_clip` say what was affordable; `--cnn` adds the default CNN of `experiment=new_artists`
(40 epochs, ~11 min) and `--probe` the frozen backbone's probe (model=musicnn_probe, mean_pool, C 0.1; ~6 min to
embed the clips unless `--cache_dir` holds them) as like-for-like rows.

python -m studies.musicnn_finetune [--output docs/results/musicnn_finetune.md] [--work DIR] [--epochs 6]
    [--freeze_epochs 1] [--crops_per_clip 2] [--frame_rate native] [--cnn] [--probe] [--cache_dir DIR]
"""

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import fire

from music_genre_classification.config import compose
from studies.results import Results

NEW_ARTISTS = ["experiment=new_artists", "~logger"]


def fit_timed(work: Path, *overrides: str, quiet: bool = False) -> dict:
    """One `train` in this process; its val figures, wall and CPU minutes, and each epoch's val loss and accuracy."""
    from music_genre_classification.training.train import fit

    cfg = compose("train", [*NEW_ARTISTS, f"output_dir={work}", *overrides])
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        result = fit(cfg)
    result["wall_min"] = (time.perf_counter() - wall) / 60
    result["cpu_min"] = (time.process_time() - cpu) / 60
    return result


def row(name: str, settings: str, r: dict) -> list[str]:
    best = Path(r.get("best_checkpoint", "")).stem.removeprefix("epoch")
    epoch = str(int(best) + 1) if best.isdigit() else "-"
    return [
        name,
        settings,
        epoch,
        f"{r['val/acc']:.3f}",
        f"{r['val/loss']:.3f}",
        f"{r['wall_min']:.1f}",
        f"{r['cpu_min']:.1f}",
    ]


def main(
    output: str | None = None,
    work: str | None = None,
    epochs: int = 6,
    freeze_epochs: int = 1,
    crops_per_clip: int = 2,
    batch_size: int = 16,
    lr: float = 0.01,
    backbone_lr: float = 0.1,
    frame_rate: str = "native",
    cnn: bool = False,
    probe: bool = False,
    cache_dir: str | None = None,
) -> None:
    work_dir = Path(work or tempfile.mkdtemp(prefix="musicnn_finetune_"))
    rows = []
    with Results(output, "musicnn_finetune") as results:
        if probe:  # embedding the 639 clips costs ~6 min unless cached
            cache = [f"model.cache_dir={cache_dir}"] if cache_dir else []
            overrides = ["model=musicnn_probe", "~model.grid", "model.embedding=mean_pool", "~model.mixup", *cache]
            frozen = fit_timed(work_dir / "probe", *overrides, quiet=True)
            rows.append(row("musicnn_probe (frozen backbone)", "mean_pool, logistic regression C 0.1", frozen))
            print(f"probe: val acc {frozen['val/acc']:.3f}, val loss {frozen['val/loss']:.3f}")

        settings = [
            "model=musicnn",
            f"trainer.max_epochs={epochs}",
            f"model.freeze_epochs={freeze_epochs}",
            f"model.backbone_lr={backbone_lr}",
            f"model.optimizer.lr={lr}",
            f"model.net.frame_rate={frame_rate}",
            f"datamodule.crops_per_clip={crops_per_clip}",
            f"datamodule.batch_size={batch_size}",
        ]
        tuned = fit_timed(work_dir / "musicnn", *settings)
        described = (
            f"{frame_rate} frame rate, {epochs} epochs ({freeze_epochs} head only), lr {lr}, backbone x{backbone_lr}, "
            f"{crops_per_clip} crops/clip, batch {batch_size}"
        )
        rows.append(row("musicnn, fine-tuned", described, tuned))
        print(f"musicnn fine-tuned: {json.dumps({k: round(v, 4) for k, v in tuned.items() if k.startswith('val/')})}")

        if cnn:
            reference = fit_timed(work_dir / "cnn", "model=cnn", quiet=True)
            rows.append(row("cnn (`experiment=new_artists`)", "40 epochs, mixup 0.3", reference))
            print(f"cnn: val acc {reference['val/acc']:.3f}, val loss {reference['val/loss']:.3f}")
        results.table(
            "New artists (the artist-disjoint val part of the fault-filtered train list, 87 clips; the test part not "
            "read): the epoch kept (lowest val loss), val accuracy and log loss, and the training's wall and CPU "
            "minutes on 2 CPU cores:",
            ["model", "settings", "epoch kept", "val acc", "val log loss", "wall min", "CPU min"],
            rows,
        )


if __name__ == "__main__":
    fire.Fire(main)

"""model=musicnn through the real CLI: a tiny fine-tuning run gives an ordinary network checkpoint that `test`,
`infer` and `embed` read on real audio files, holding the fine-tuned backbone but none of the adapter's fixed matrices."""

import json

import pytest
from helpers.audio import GENRES
from helpers.processes import run_in_process

from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.predictors import checkpoint_kind
from music_genre_classification.serving.library import read_library

TINY = [
    "model=musicnn",
    f"datamodule.genres=[{','.join(GENRES)}]",
    "datamodule.crop_columns=32",
    "datamodule.batch_size=8",
    "datamodule.crops_per_clip=1",
    "model.eval_hop=16",
    "model.freeze_epochs=1",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=2",
    "trainer.accelerator=cpu",
    "+trainer.enable_progress_bar=false",
    "~logger",
]


@pytest.fixture(scope="module")
def finetuned(synthetic_gtzan, tmp_path_factory) -> dict:
    """`train` in this process (module scope: output caught at sys.stdout rather than by capfd)."""
    work = tmp_path_factory.mktemp("musicnn_finetune")
    folders = [f"output_dir={work / 'outputs'}", f"datamodule.cache_dir={work / '.cache'}"]
    result = run_in_process("train", f"datamodule.root={synthetic_gtzan}", *TINY, *folders, cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "checkpoint": work / "outputs" / "model_full.ckpt", "stdout": result.stdout}


def test_the_checkpoint_is_a_network_checkpoint_with_the_fine_tuned_backbone(finetuned):
    ckpt = load_checkpoint(finetuned["checkpoint"])
    hp = ckpt["hyper_parameters"]
    assert checkpoint_kind(ckpt) == "cnn" and hp["net"]["_target_"].endswith("GenreMusicnn")
    run_val = json.loads((finetuned["checkpoint"].resolve().parents[1] / "val_metrics.json").read_text())
    assert 0 <= run_val["val/acc"] <= 1 and "temperature" in hp
    assert hp["freeze_epochs"] == 1 and hp["backbone_lr"] == 0.1
    keys = set(ckpt["state_dict"])
    assert "net.backbone.timbral.0.weight" in keys and "net.head.1.weight" in keys
    assert not any(k.startswith(("net.bands.", "net.backbone.output.", "net.backbone.dense.")) for k in keys)


def test_test_infer_and_embed_read_it_on_real_audio(finetuned, synthetic_gtzan, cli_in_process):
    work = finetuned["work"]
    result = cli_in_process("test", finetuned["checkpoint"], cwd=work)
    assert result.returncode == 0 and "accuracy" in result.stdout, result.stderr[-2000:]
    clip = next((synthetic_gtzan / "high").glob("*.wav"))
    result = cli_in_process("infer", finetuned["checkpoint"], clip, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(genre in result.stdout for genre in GENRES)
    table = work / "library.npz"
    args = ["embed", "--model_path", finetuned["checkpoint"], "--audio_path", clip.parent, "--output_path", table]
    result = cli_in_process(*args, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    library = read_library(table)
    assert len(library.paths) == len(list(clip.parent.glob("*.wav"))) and library.embeddings.shape[1] == 753

"""What the commands print is theirs: no third-party tables, notes or warnings beside their own lines."""

import os
import pickle
import subprocess
import sys

import numpy as np
import soundfile as sf
from helpers.audio import SR, encode, tone
from helpers.processes import REPO, run_cli


def test_train_prints_no_model_summary(trained):
    printed = trained["stdout"] + trained["stderr"]
    assert "FLOPs" not in printed and "Total params" not in printed and "┃" not in printed
    assert "temperature:" in trained["stdout"]  # its own summary is there


def test_a_pickle_protocol_4_checkpoint_is_only_the_error_line(tmp_path):
    with open(tmp_path / "old.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": {}}, f, protocol=4)
    sf.write(tmp_path / "a.wav", tone("low", 1), SR)
    result = run_cli("infer", "old.ckpt", "a.wav", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "error: old.ckpt: not a readable checkpoint (UnpicklingError)\n"


def test_a_cut_flac_warning_is_whole_sentences(trained, tmp_path):
    music = np.concatenate([tone("low", seed) for seed in range(6)])
    whole = encode(music, "FLAC")
    (tmp_path / "cut.flac").write_bytes(whole[: int(len(whole) * 0.55)])
    result = run_cli("infer", str(trained["checkpoint"]), "cut.flac", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "damaged or cut off. Only those" in warning and warning.endswith(" s are classified.")


def test_libsndfile_internal_failures_are_not_shown():
    """libsndfile prints "Internal psf_fseek() failed." straight to file descriptor 2; the command's lines stay."""
    script = (
        "import os, sys\n"
        "from music_genre_classification.config import drop_decoder_notes\n"
        "drop_decoder_notes()\n"
        "os.write(2, b'Internal psf_fseek() failed.\\n')\n"
        "print('warning: a.flac: damaged or cut off.', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.stderr == "warning: a.flac: damaged or cut off.\n"

"""The musicnn port against the original TensorFlow model on real GTZAN clips (fixture: studies/musicnn_reference.py)."""

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from music_genre_classification.models.musicnn import (
    N_MELS,
    SAMPLE_RATE,
    TAGS,
    MusicnnFrontEnd,
    MusicnnNetwork,
    load_musicnn,
    weights_metadata,
    weights_path,
)
from music_genre_classification.models.musicnn_convert import CHECKPOINTS, LAYERS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "musicnn_reference.npz"
OUTPUTS = ("tags", "penultimate", "max_pool", "mean_pool")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return dict(data)


@pytest.mark.parametrize("dataset", ["msd", "mtt"])
def test_port_gives_the_original_outputs_on_its_mel_patches(reference, dataset):
    torch.set_num_threads(2)
    model = load_musicnn(dataset)
    with torch.inference_mode():
        out = model.network(torch.from_numpy(reference["mel"]))
    for name in OUTPUTS:
        np.testing.assert_allclose(out[name].numpy(), reference[f"{dataset}_{name}"], rtol=1e-4, atol=1e-4)
    # every patch gets its own embedding (the original extractor repeats patch 0's)
    assert np.abs(out["penultimate"][0] - out["penultimate"][1]).max() > 0.1


def test_front_end_gives_the_original_mel_from_the_same_audio(reference, real_dataset):
    librosa = pytest.importorskip("librosa")
    frontend = MusicnnFrontEnd()
    for i, clip in enumerate(reference["clips"]):
        wave, _ = librosa.load(real_dataset / "genres_original" / str(clip), sr=SAMPLE_RATE)  # as the original loads
        expected = reference["mel"][reference["clip_index"] == i].reshape(-1, N_MELS)
        mel = frontend(torch.from_numpy(wave)).numpy()[: len(expected)]
        # frame 0 differs: today's librosa pads the first frame with zeros, musicnn was trained with reflect padding;
        # the original rounds the mel power to float16 before the log: up to 2^-11 / ln 10 = 2.1e-4 apart
        np.testing.assert_allclose(mel[1:], expected[1:], rtol=0, atol=2.5e-4)
        assert np.isfinite(mel).all() and mel.min() >= 0


def test_backbone_from_audio_tags_the_clip_as_the_original(reference, real_dataset):
    torch.set_num_threads(2)
    model = load_musicnn("msd")
    path = real_dataset / "genres_original" / str(reference["clips"][0])
    wave, rate = sf.read(path, dtype="float32", frames=22050 * 7)  # the first two patches and a bit
    with torch.inference_mode():
        out = model(torch.from_numpy(wave), sample_rate=rate)
    expected = reference["msd_tags"][reference["clip_index"] == 0]
    assert out.patch_tags.shape == (2, 50) and out.patch_penultimate.shape == (2, 200)
    assert out.patch_max_pool.shape == out.patch_mean_pool.shape == (2, 753)
    # another resampler than the reference's (soxr) and reflect padding of frame 0: close, not equal
    np.testing.assert_allclose(out.patch_tags.numpy(), expected, atol=0.05)
    assert (out.patch_tags.argmax(1).numpy() == expected.argmax(1)).all()
    assert TAGS["msd"][int(out.tags.argmax())] == TAGS["msd"][int(expected.mean(0).argmax())]
    torch.testing.assert_close(out.tags, out.patch_tags.mean(0))
    torch.testing.assert_close(out.max_pool, out.patch_max_pool.amax(0))
    torch.testing.assert_close(out.mean_pool, out.patch_mean_pool.mean(0))
    with torch.inference_mode():
        assert model(torch.from_numpy(wave), max_patches=1, sample_rate=rate).patch_tags.shape == (1, 50)


@pytest.mark.parametrize("dataset", ["msd", "mtt"])
def test_weights_file_holds_every_tensor_of_the_network_and_nothing_else(dataset):
    path = weights_path(dataset)
    assert path.stat().st_size < 4_000_000 and (path.parent / "LICENSE-musicnn.txt").is_file()
    weights = load_file(str(path))
    expected = MusicnnNetwork().state_dict()
    assert set(weights) == set(expected)
    for name, value in expected.items():
        assert weights[name].shape == value.shape, name
        assert torch.isfinite(weights[name].float()).all(), name
    assert weights["input_bn.running_var"].item() > 0  # batch-norm statistics came with the weights
    meta = weights_metadata(path)
    assert json.loads(meta["tags"]) == list(TAGS[dataset]) and "ISC" in meta["licence"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _table_block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1) + b"\0" * 5  # one restart point; trailer: no compression, crc


def tf_checkpoint(tensors: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """A TF2-format checkpoint (.index, .data) as TensorFlow's BundleWriter lays it out, written by hand."""
    data, entries = b"", [(b"", _field(1, 1) + _field(3, _field(1, 1)))]  # the header: 1 shard, version 1
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in tensors[name].shape)
        entries.append((name.encode(), _field(1, 1) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))))
        data += raw
    block = _table_block(entries)
    meta = _table_block([])
    index = _table_block([(b"\xff", _varint(0) + _varint(len(block) - 5))])
    handles = _varint(len(block)) + _varint(len(meta) - 5) + _varint(len(block) + len(meta)) + _varint(len(index) - 5)
    footer = handles.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return block + meta + index + footer, data


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The committed weights, put back into TensorFlow's names and layouts inside a wheel shaped like musicnn's."""
    layers = {module: layer for layer, module in LAYERS.items()}
    parameters = {"weight": "kernel", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}
    wheel = tmp_path_factory.mktemp("wheel") / "musicnn-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for dataset, checkpoint in CHECKPOINTS.items():
            tensors = {"beta1_power": np.array(0.9, dtype=np.float32)}  # optimizer state: left out
            for name, value in load_file(str(weights_path(dataset))).items():
                module, parameter = name.rsplit(".", 1)
                if parameter == "num_batches_tracked":
                    continue
                value = value.numpy()
                tf_parameter = parameters[parameter]
                if module.endswith("bn") or "_bn." in name:
                    tf_parameter = {"weight": "gamma", "bias": "beta"}.get(parameter, tf_parameter)
                if value.ndim == 4:  # (out, in, time, freq) -> (time, freq, in, out)
                    value = value.transpose(2, 3, 1, 0)
                elif value.ndim == 3:  # Conv1d (out, in, time) -> (time, in, 1, out)
                    value = value.transpose(2, 1, 0)[:, :, None, :]
                elif value.ndim == 2:
                    value = value.T
                tensors[f"{layers[module]}/{tf_parameter}"] = value
                tensors[f"{layers[module]}/{tf_parameter}/Adam"] = np.zeros_like(value)
            index, data = tf_checkpoint(tensors)
            archive.writestr(f"musicnn/{checkpoint}/.index", index)
            archive.writestr(f"musicnn/{checkpoint}/.data-00000-of-00001", data)
    return wheel


def test_the_convert_command_reads_the_tf_checkpoint_layout_into_the_committed_weights(wheel, tmp_path, cli_in_process):
    result = cli_in_process("musicnn_convert", wheel, "weights", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]  # the folder as given
    assert written == [Path("weights") / weights_path(dataset).name for dataset in CHECKPOINTS]
    for dataset, path in zip(CHECKPOINTS, (tmp_path / p for p in written)):
        converted, committed = load_file(str(path)), load_file(str(weights_path(dataset)))
        assert set(converted) == set(committed)
        for name, value in committed.items():
            assert torch.equal(converted[name], value), name
        assert weights_metadata(path) == weights_metadata(weights_path(dataset))


def test_the_convert_command_refuses_what_is_not_the_musicnn_wheel_before_writing(wheel, tmp_path, cli_in_process):
    (tmp_path / "not_a_zip.whl").write_bytes(b"not a zip archive")
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as archive:
        archive.writestr("other/__init__.py", "")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(tmp_path / "cut.whl", "w") as archive:
        for member in source.namelist():  # the MSD checkpoint's tensors cut short
            data = source.read(member)
            archive.writestr(member, data[: len(data) // 2] if member.endswith(".data-00000-of-00001") else data)
    (tmp_path / "a_file").write_text("")
    cases = {
        "missing.whl": "missing.whl: no such wheel or folder",
        "not_a_zip.whl": "not_a_zip.whl: File is not a zip file",
        "other.whl": "other.whl: no MSD_musicnn checkpoint",
        "cut.whl": "cut.whl: ",
        str(tmp_path): "no MSD_musicnn/.index below this folder",
    }
    for source, message in cases.items():
        result = cli_in_process("musicnn_convert", source, "out", cwd=tmp_path)
        (line,) = result.stderr.splitlines()
        assert result.returncode == 1 and line.startswith("error: ") and message in line, (source, result.stderr)
    result = cli_in_process("musicnn_convert", wheel, "a_file", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == "error: a_file: not a folder"
    result = cli_in_process("musicnn_convert", wheel, cwd=tmp_path)
    assert result.returncode == 1 and "needs --output_dir" in result.stderr
    assert not (tmp_path / "out").exists()

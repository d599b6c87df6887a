"""Convert musicnn's TensorFlow checkpoints (from the musicnn 0.1.0 wheel) to safetensors, without TensorFlow.

    music-genre musicnn_convert musicnn-0.1.0-py3-none-any.whl OUTPUT_DIR

(the wheel: `pip download --no-deps musicnn==0.1.0`; a folder where it was unpacked works too). Writes
`musicnn_msd.safetensors` and `musicnn_mtt.safetensors`: the model's weights and batch-norm statistics only, not the
optimizer's state that the checkpoints also hold.

A TF checkpoint's `.index` is a LevelDB-format table (uncompressed blocks of prefix-compressed key/value entries,
a 48-byte footer) whose keys are tensor names and whose values are BundleEntryProto messages (dtype, shape, offset,
size) pointing into the `.data-00000-of-00001` file, which holds the raw little-endian tensors.
"""

import json
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from music_genre_classification.config import UserError
from music_genre_classification.models.musicnn import TAGS, MusicnnNetwork, weights_path

TABLE_MAGIC = 0xDB4775248B80FB57
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TensorFlow DataType -> numpy
CHECKPOINTS = {"msd": "MSD_musicnn", "mtt": "MTT_musicnn"}
LICENCE = (
    "ISC licence. Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019. "
    "Code developed by Jordi Pons (www.jordipons.me). See LICENSE-musicnn.txt."
)

# TensorFlow layer name (in the order build_musicnn creates them) -> this port's module
LAYERS = {
    "conv2d": "timbral.0",
    "conv2d_1": "timbral.1",
    "conv2d_2": "temporal.0",
    "conv2d_3": "temporal.1",
    "conv2d_4": "temporal.2",
    "conv2d_5": "midend.0",
    "conv2d_6": "midend.1",
    "conv2d_7": "midend.2",
    "dense": "dense",
    "dense_1": "output",
    "batch_normalization": "input_bn",
    "batch_normalization_1": "timbral_bn.0",
    "batch_normalization_2": "timbral_bn.1",
    "batch_normalization_3": "temporal_bn.0",
    "batch_normalization_4": "temporal_bn.1",
    "batch_normalization_5": "temporal_bn.2",
    "batch_normalization_6": "midend_bn.0",
    "batch_normalization_7": "midend_bn.1",
    "batch_normalization_8": "midend_bn.2",
    "batch_normalization_9": "pool_bn",
    "batch_normalization_10": "dense_bn",
}
PARAMETERS = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The key/value entries of one table block (keys share prefixes with the previous key)."""
    (restarts,) = struct.unpack("<I", block[-4:])
    end, pos, key = len(block) - 4 - 4 * restarts, 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def _read_block(table: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if table[offset + size] != 0:  # the trailer's first byte: compression type
        raise ValueError("compressed checkpoint index blocks are not supported")
    return table[offset : offset + size]


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints, length-delimited bytes and fixed32/64 as int."""
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            size, pos = _varint(message, pos)
            value, pos = message[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(message[pos : pos + 4], "little"), pos + 4
        elif wire == 1:
            value, pos = int.from_bytes(message[pos : pos + 8], "little"), pos + 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield number, value


def _bundle_entry(value: bytes) -> tuple[int, tuple[int, ...], int, int]:
    """BundleEntryProto -> (dtype, shape, offset, size); shard_id and slices are not used by these checkpoints."""
    dtype, shape, offset, size = 0, [], 0, 0
    for number, field in _fields(value):
        if number == 1:
            dtype = field
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1 }
            shape = [dict(_fields(dim)).get(1, 0) for n, dim in _fields(field) if n == 2]
        elif number == 4:
            offset = field
        elif number == 5:
            size = field
    return dtype, tuple(shape), offset, size


def read_tf_checkpoint(index: bytes, data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard TF2-format checkpoint, by name, from its `.index` and `.data` bytes."""
    footer = index[-48:]
    if struct.unpack("<Q", footer[-8:])[0] != TABLE_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index")
    _, pos = _varint(footer, 0)  # the metaindex block's handle: unused
    _, pos = _varint(footer, pos)
    tensors = {}
    for _, handle in _block_entries(_read_block(index, footer[pos:])):
        for key, value in _block_entries(_read_block(index, handle)):
            if not key:  # the header entry
                continue
            dtype, shape, offset, size = _bundle_entry(value)
            if dtype not in DTYPES:
                continue
            array = np.frombuffer(data[offset : offset + size], dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
            tensors[key.decode()] = array.reshape(shape).copy()
    return tensors


def _checkpoint_files(wheel: Path, name: str) -> tuple[bytes, bytes]:
    """The `.index` and `.data` bytes of checkpoint `name` in a wheel or in a folder holding the unpacked package."""
    if wheel.is_file():
        with zipfile.ZipFile(wheel) as archive:
            members = {Path(m).as_posix(): m for m in archive.namelist()}
            index = next((m for p, m in members.items() if p.endswith(f"{name}/.index")), None)
            if index is None:
                raise UserError(f"{wheel}: no {name} checkpoint (is it the musicnn 0.1.0 wheel?)")
            return archive.read(index), archive.read(index[: -len(".index")] + ".data-00000-of-00001")
    found = sorted(wheel.rglob(f"{name}/.index"))
    if not found:
        raise UserError(f"{wheel}: no {name}/.index below this folder")
    return found[0].read_bytes(), found[0].with_name(".data-00000-of-00001").read_bytes()


def tf_to_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The network's state dict from the checkpoint's tensors (TF layouts turned into PyTorch's)."""
    state = {}
    for layer, module in LAYERS.items():
        for tf_name, name in PARAMETERS.items():
            key = f"{layer}/{tf_name}"
            if key not in tensors:
                continue
            value = tensors[key]
            if tf_name == "kernel" and value.ndim == 4:  # (time, freq, in, out)
                value = value.transpose(3, 2, 0, 1)  # (out, in, time, freq)
                if module.startswith("midend"):  # a convolution over all the features: Conv1d (out, in, time)
                    value = value[:, 0].transpose(0, 2, 1)
            elif tf_name == "kernel":  # dense (in, out)
                value = value.T
            state[f"{module}.{name}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if layer.startswith("batch_normalization"):
            state[f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    expected = MusicnnNetwork(50).state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the checkpoint lacks {', '.join(missing)}")
    for name, value in expected.items():
        if state[name].shape != value.shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(state[name].shape)}, expected {tuple(value.shape)}")
    return state


def convert_musicnn_weights(wheel: str, output_dir: str) -> list[Path]:
    """Write musicnn_msd.safetensors and musicnn_mtt.safetensors into `output_dir` from the musicnn 0.1.0 wheel (or
    the folder where it was unpacked); both checkpoints are read before anything is written."""
    source, out = Path(wheel), Path(output_dir)
    if not source.exists():
        raise UserError(f"{source}: no such wheel or folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder")
    states = {}
    for dataset, name in CHECKPOINTS.items():
        try:
            states[dataset] = tf_to_state_dict(read_tf_checkpoint(*_checkpoint_files(source, name)))
        except (ValueError, KeyError, IndexError, struct.error, zipfile.BadZipFile) as err:  # a damaged checkpoint
            raise UserError(f"{source}: {err} (is it the musicnn 0.1.0 wheel?)") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset, state in states.items():
        path = out / weights_path(dataset).name
        metadata = {
            "source": f"musicnn 0.1.0 (https://github.com/jordipons/musicnn), checkpoint {CHECKPOINTS[dataset]}",
            "licence": LICENCE,
            "dataset": dataset,
            "tags": json.dumps(list(TAGS[dataset])),
        }
        save_file(state, str(path), metadata=metadata)
        written.append(path)
    return written


def run_musicnn_convert(wheel: str, output_dir: str) -> None:
    """Convert musicnn's TensorFlow checkpoints to the safetensors weights the backbone loads.

    WHEEL: the musicnn 0.1.0 wheel (pip download --no-deps musicnn==0.1.0), or the folder where it was unpacked;
    OUTPUT_DIR gets musicnn_msd.safetensors and musicnn_mtt.safetensors (the models' weights and batch-norm
    statistics, not the optimizer's state). No TensorFlow needed.

    The `musicnn_convert` command: prints the files written."""
    for path in convert_musicnn_weights(wheel, output_dir):
        print(path)

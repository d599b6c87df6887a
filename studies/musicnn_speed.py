"""How fast the musicnn backbone tags a 30-s clip on the CPU, beside the project's default CNN: ms per clip.

    python -m studies.musicnn_speed [--threads 2] [--rounds 5] [--clip CLIP.wav] [--output docs/results/NAME.md]

Rows: the default CNN (log-mel + GenreCNN as configs/model/cnn.yaml, folded for inference, crops as at inference);
musicnn from 22.05 kHz audio (resampling, front end, network) with 10, 5 or 3 patches per 30-s window; its network
alone with one patch at a time or several clips at once; no_grad against inference_mode; the network with its
frequency max-pool taken before the batch norm (the same outputs, one pass less over the timbral maps) and its timbral
convolutions computed three ways;
ONNX Runtime when `onnxruntime` (and `onnx`, `onnxscript` for the export) can be imported. Each figure is the median
of `rounds` timed runs after one warm-up; the network's weights do not change its speed, so the CNN's are random.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from music_genre_classification.models.musicnn import (
    PATCH_FRAMES,
    MusicnnNetwork,
    load_musicnn,
    patch_starts,
    resample_for_musicnn,
)
from studies.results import Results

REPO = Path(__file__).resolve().parents[1]


def timed(run: Callable[[], object], rounds: int) -> float:
    """Median wall ms of `run` over `rounds` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def default_cnn() -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """The default CNN's whole path from a 22.05 kHz waveform to clip probabilities, and its sample rate."""
    from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
    from music_genre_classification.models.networks import clip_probabilities, for_inference

    with initialize_config_dir(str(REPO / "configs"), version_base=None):
        cfg = compose("train")
    from hydra.utils import instantiate

    net = for_inference(instantiate(cfg.model.net, n_genres=10))
    spec = cfg.datamodule.spectrogram
    params = SpectrogramParams(**{k: spec[k] for k in SpectrogramParams.__dataclass_fields__ if k in spec})
    logmel = LogMel(params)
    crop, hop = cfg.datamodule.crop_columns, cfg.model.eval_hop

    def run(wave: torch.Tensor) -> torch.Tensor:
        return clip_probabilities(net, [logmel(wave)], crop, hop)

    return run, params.sample_rate


class FastNetwork(MusicnnNetwork):
    """musicnn with the front end's batch norms applied after the frequency max-pool: max(a x + b) = a max(x) + b
    for a >= 0 and a min(x) + b for a < 0, so the big (batch, 204, frames, bands) maps are read once less.

    `timbral`: how the two timbral convolutions (1 input channel, 7 x 38 and 7 x 67 kernels) are computed: "conv"
    (PyTorch's Conv2d), "bands" (the kernel's bands unfolded into input channels, then a 7 x 1 convolution over 38 or
    67 channels) or "im2col" (every 7 x w window unfolded, then one matrix product).
    """

    def __init__(self, timbral: str = "conv") -> None:
        super().__init__(50)
        self.timbral_mode = timbral

    def timbral_maps(self, conv: torch.nn.Conv2d, padded: torch.Tensor) -> torch.Tensor:
        width = conv.kernel_size[1]
        if self.timbral_mode == "bands":  # (batch, 1, time, bands) -> (batch, width, time, bands - width + 1)
            windows = padded[:, 0].unfold(2, width, 1).permute(0, 3, 1, 2)
            weight = conv.weight.permute(0, 3, 2, 1)  # (out, width, 7, 1)
            return torch.nn.functional.conv2d(windows, weight, conv.bias)
        if self.timbral_mode == "im2col":
            frames, bands = padded.shape[2] - 6, padded.shape[3] - width + 1
            columns = torch.nn.functional.unfold(padded, conv.kernel_size)  # (batch, 7 * width, frames * bands)
            out = torch.matmul(conv.weight.flatten(1), columns) + conv.bias[:, None]
            return out.view(padded.shape[0], -1, frames, bands)
        return conv(padded)

    def frontend(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(patches.unsqueeze(1))
        padded = torch.nn.functional.pad(x, (0, 0, 3, 3))
        maps = [(self.timbral_maps(conv, padded), bn) for conv, bn in zip(self.timbral, self.timbral_bn)]
        for length, conv, bn in zip(self.temporal_lengths, self.temporal, self.temporal_bn):
            before = (length - 1) // 2
            maps.append((conv(torch.nn.functional.pad(x, (0, 0, before, length - 1 - before))), bn))
        pooled_maps = []
        for out, bn in maps:
            out = torch.relu(out)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            pooled = torch.where(scale[:, None] >= 0, out.amax(dim=3), out.amin(dim=3))
            pooled_maps.append(pooled * scale[:, None] + shift[:, None])
        return torch.cat(pooled_maps, dim=1)


def onnx_session(network: torch.nn.Module, threads: int):
    """The network exported to ONNX and loaded into ONNX Runtime, or None when those packages are missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = Path("/tmp") / "musicnn_speed.onnx"

    class Outputs(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.net(mel)
            return out["tags"], out["penultimate"], out["max_pool"], out["mean_pool"]

    example = torch.zeros(10, PATCH_FRAMES, 96)
    torch.onnx.export(
        Outputs(network).eval(),
        (example,),
        str(path),
        input_names=["mel"],
        output_names=["tags", "penultimate", "max_pool", "mean_pool"],
        dynamic_axes={"mel": {0: "patches"}},
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip", default=str(REPO / "data/dataset/genres_original/blues/blues.00000.wav"))
    parser.add_argument("--output", default=None, help="write what it prints as a Markdown page, e.g. docs/results/")
    args = parser.parse_args()
    with Results(args.output, "musicnn_speed"):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    wave, rate = sf.read(args.clip, dtype="float32", frames=22050 * 30)
    wave = torch.from_numpy(wave if wave.ndim == 1 else wave.mean(1))
    print(f"ms per 30-s clip, {args.threads} threads, median of {args.rounds} (torch {torch.__version__})")

    cnn, cnn_rate = default_cnn()
    assert rate == cnn_rate
    with torch.inference_mode():
        print(f"{'default CNN: audio -> genres':58s} {timed(lambda: cnn(wave), args.rounds):8.1f}")

    model = load_musicnn("msd")
    network = model.network
    with torch.inference_mode():
        wave16 = resample_for_musicnn(wave, rate)
        mel = model.frontend(wave16)
        starts = patch_starts(mel.shape[0])
        patches = torch.stack([mel[s : s + PATCH_FRAMES] for s in starts])
        rows = {
            "musicnn: resample 22.05 -> 16 kHz": lambda: resample_for_musicnn(wave, rate),
            "musicnn: log-mel front end": lambda: model.frontend(wave16),
        }
        for count in (10, 5, 3):
            rows[f"musicnn: audio -> tags + embeddings, {count} patches"] = lambda c=count: model(
                wave, max_patches=c, sample_rate=rate
            )
        for count in (10, 5, 3):
            rows[f"musicnn network, {count} patches in one batch"] = lambda c=count: network(patches[:c])
        for size in (1, 2, 3):
            name = f"musicnn network, 10 patches, {size} at a time"
            rows[name] = lambda n=size: [network(part) for part in patches.split(n)]
        four = patches.repeat(4, 1, 1)
        rows["musicnn network, 4 clips x 10 patches in one batch (/4)"] = lambda: network(four)
        for name, run in rows.items():
            ms = timed(run, args.rounds) / (4 if "/4" in name else 1)
            print(f"{name:58s} {ms:8.1f}")
    with torch.no_grad():
        print(
            f"{'musicnn network, 10 patches, no_grad (not inference_mode)':58s} "
            f"{timed(lambda: network(patches), args.rounds):8.1f}"
        )

    for mode in ("conv", "bands", "im2col"):
        fast = FastNetwork(mode)
        fast.load_state_dict(network.state_dict())
        fast.eval()
        with torch.inference_mode():
            reference = network(patches)
            same = max((fast(patches)[k] - reference[k]).abs().max().item() for k in ("tags", "penultimate"))
            for count in (10, 5, 3):
                ms = timed(lambda c=count, f=fast: f(patches[:c]), args.rounds)
                print(f"{f'musicnn network, BN after max-pool, timbral {mode}, {count} patches':58s} {ms:8.1f}")
        print(f"  (its tags and penultimate differ from the plain network's by at most {same:.1e})")

    session = onnx_session(network, args.threads)
    if session is None:
        print("ONNX Runtime: not installed (pip install onnxruntime onnx onnxscript)")
        return
    feeds = {"mel": patches.numpy()}
    out = session.run(None, feeds)
    with torch.inference_mode():
        gap = np.abs(out[0] - network(patches)["tags"].numpy()).max()
    for count in (10, 5, 3):
        small = {"mel": patches[:count].numpy()}
        ms = timed(lambda f=small: session.run(None, f), args.rounds)
        print(f"{f'ONNX Runtime network, {count} patches':58s} {ms:8.1f}")
    for size in (1, 2, 5):
        parts = [{"mel": part.numpy()} for part in patches.split(size)]
        ms = timed(lambda p=parts: [session.run(None, f) for f in p], args.rounds)
        print(f"{f'ONNX Runtime network, 10 patches, {size} at a time':58s} {ms:8.1f}")
    print(f"  (its tags differ from PyTorch's by at most {gap:.1e})")


if __name__ == "__main__":
    main()

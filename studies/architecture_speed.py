"""Parameters and network time per 30-s clip of each `model=` architecture, as configured by default:
python -m studies.architecture_speed [--output docs/results/architecture_speed.md]

One thread, a 387-column log-mel clip covered by 128-column crops every 64 (what `test` and `infer` run), BatchNorm
folded; the best of 5 rounds of 10 clips, so that other jobs on the machine disturb it least. Decoding and the log-mel
front end (the same for all) are not included.
"""

import time

import fire
import torch

from music_genre_classification.config import build, compose
from music_genre_classification.models.networks import for_inference
from studies.results import Results

VARIANTS = [["model=cnn"], ["model=cnn", "model.net.n_mfcc=40"], ["model=cnn1d"], ["model=crnn"], ["model=lstm"]]
VARIANTS += [["model=resnet"], ["model=cnn1d", "model.net.n_mfcc=20"]]


def clip_ms(net: torch.nn.Module, clip: torch.Tensor, rounds: int = 5, clips: int = 10) -> float:
    with torch.inference_mode():
        net.crop_logits(clip, 128, 64)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(clips):
                net.crop_logits(clip, 128, 64)
            times.append((time.perf_counter() - started) / clips * 1000)
    return min(times)


def main(output: str | None = None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clip = torch.rand(1, 128, 387)
    with Results(output, "architecture_speed") as results:
        print(f"{'model':<32} {'parameters':>10} {'ms per clip':>11}")
        rows = []
        for overrides in VARIANTS:
            cfg = compose("train", overrides)
            net = for_inference(build(cfg.model.net, n_genres=10))
            parameters, ms = sum(p.numel() for p in net.parameters()), clip_ms(net, clip)
            print(f"{' '.join(overrides):<32} {parameters / 1e6:9.2f}M {ms:11.1f}")
            rows.append([f"`{' '.join(overrides)}`", f"{parameters / 1e6:.2f}M", f"{ms:.1f}"])
        results.table(
            "One thread, a 30-s clip in 128-column crops every 64:", ["model", "parameters", "ms per clip"], rows
        )


if __name__ == "__main__":
    fire.Fire(main)

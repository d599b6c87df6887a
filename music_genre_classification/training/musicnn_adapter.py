"""Training the learned spectrogram adapter (models/musicnn_adapter.py) on the GTZAN clips that have both audio and a
stored spectrogram.

For each such clip the target is musicnn's own log-mel of the real audio (models/musicnn.py's front end, resampled to
16 kHz as musicnn does), put on the fixed adapter's time grid; the frozen MSD backbone's outputs on its 3-s patches
are computed once. The adapter (fixed adapter + learned residual) is trained so that the backbone's outputs on the
same patches from the spectrogram come close to those from the audio (centred cosine of the penultimate layer and the
mean- and max-pooled features, cross-entropy of the tags) and its log-mel close to the audio's.

python -m music_genre_classification.training.musicnn_adapter [--root data/dataset] [--mel_steps 300] [--steps 120] \
    [--output music_genre_classification/models/weights/musicnn_adapter_msd.safetensors]
"""

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F

from music_genre_classification.data.audio import load_audio
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.data.split import read_artists, read_list
from music_genre_classification.models.musicnn import (
    PATCH_FRAMES,
    MusicnnBackbone,
    MusicnnFrontEnd,
    load_musicnn,
    patch_starts,
    resample_for_musicnn,
)
from music_genre_classification.models.musicnn_adapter import (
    LEARNED_ADAPTER_PATH,
    LearnedAdapter,
    as_params,
    save_learned_adapter,
    spectrogram_to_musicnn_mel,
)

OUTPUTS = ("penultimate", "mean_pool", "max_pool")  # the embeddings the loss and the report compare
MEL_STEPS = 300  # first the log-mel loss alone (cheap: no pass through the backbone)
STEPS = 120  # then the backbone's outputs too (~1.4 s a step on 2 threads)


@dataclass
class AdapterPair:
    """One clip with audio and a stored spectrogram: the fixed adapter's log-mel of the spectrogram (frames, 96), the
    audio's own log-mel on the same time grid for the first `covered` frames (the part of the clip with audio), and
    the backbone's outputs from the audio on the 3-s patches at `starts`."""

    clip: str  # genre/genre.000NN
    genre: str
    artist: str
    full: bool  # the audio holds the whole clip (else only its first 15-20 s)
    fixed: torch.Tensor  # (frames, 96)
    target: torch.Tensor  # (covered, 96)
    starts: list[int]
    audio_outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # per patch (patches, dim), and "logits"

    @property
    def covered(self) -> int:
        return self.target.shape[0]


def clip_hop_frames(wave: torch.Tensor, spectrogram: torch.Tensor, params: SpectrogramParams) -> int:
    """The hop-frame count T of the whole clip that the stored columns were spread over (params.json: column c is
    frame floor((c + 0.5) * (T - 1.7) / columns)). From the audio's length when it holds the whole clip; for a clip
    cut short, the T (29-31 s) whose columns best match the audio's log-mel frames."""
    log_mel = LogMel(params)
    half = params.n_fft // 2
    frames = F.pad(wave, (half, half)).unfold(0, params.n_fft, params.hop_length)
    spectrum = torch.fft.rfft(frames * log_mel.window)
    db = 10 * torch.log10(log_mel.mel_power(spectrum.real.square() + spectrum.imag.square()).clamp(min=1e-10))
    n, columns = db.shape[0], spectrogram.shape[1]
    whole = 1 + round(params.window_s * params.sample_rate / params.hop_length)
    if len(wave) >= (params.window_s - 1) * params.sample_rate:
        return n
    best, best_r = whole, -math.inf
    for total in range(round(whole * 0.97), round(whole * 1.03) + 1):
        picked = np.floor((np.arange(columns) + 0.5) * (total - 1.7) / columns).astype(int)
        keep = picked < n
        r = np.corrcoef(spectrogram[:, keep].T.flatten().numpy(), db[picked[keep]].flatten().numpy())[0, 1]
        if r > best_r:
            best, best_r = total, r
    return best


def load_pair(wav: Path, npy: Path, params: SpectrogramParams, artist: str, front_end: MusicnnFrontEnd) -> AdapterPair:
    spectrogram = torch.from_numpy(np.load(npy).astype(np.float32))
    wave = torch.from_numpy(load_audio(wav, params.sample_rate))
    fixed = torch.from_numpy(spectrogram_to_musicnn_mel(spectrogram, params))
    with torch.no_grad():
        mel = front_end(resample_for_musicnn(wave, params.sample_rate))
    # the fixed adapter spreads the columns over a 30-s clip; this clip's columns were spread over `total` frames
    total = clip_hop_frames(wave, spectrogram, params)
    assumed = 1 + round(params.window_s * params.sample_rate / params.hop_length)
    index = np.round(np.arange(fixed.shape[0]) * (total - 1.7) / (assumed - 1.7)).astype(int)
    covered = int(np.sum(index < mel.shape[0]))
    target = mel[index[:covered]]
    clip = f"{wav.parent.name}/{wav.stem}"
    full = len(wave) >= (params.window_s - 1) * params.sample_rate
    return AdapterPair(clip, wav.parent.name, artist, full, fixed, target, patch_starts(covered))


def adapter_pairs(
    root: str | Path = "data/dataset", artists: str = "GTZANindex.txt", only: str | None = None
) -> list[AdapterPair]:
    """Every clip of `root`/genres_original with a spectrogram of the same name in `root`/spectrograms (with `only`, a
    list of clips such as train_filtered.txt, those of them on the list)."""
    keep = {clip.removesuffix(".wav") for clip in read_list(only)} if only else None
    root = Path(root)
    params = as_params(SpectrogramParams.from_dataset(root / "spectrograms" / "params.json"))
    by_clip, front_end = read_artists(artists), MusicnnFrontEnd()
    pairs = []
    for wav in sorted((root / "genres_original").glob("*/*.wav")):
        npy = root / "spectrograms" / wav.parent.name / f"{wav.stem}.npy"
        clip = f"{wav.parent.name}/{wav.stem}"
        if npy.is_file() and (keep is None or clip in keep):
            pairs.append(load_pair(wav, npy, params, by_clip.get(clip, clip), front_end))
    if not pairs:
        raise FileNotFoundError(f"{root}: no clip with both audio (genres_original/) and a spectrogram (spectrograms/)")
    return pairs


def patches_of(mel: torch.Tensor, starts: list[int]) -> torch.Tensor:
    return torch.stack([mel[s : s + PATCH_FRAMES] for s in starts])


@torch.no_grad()
def network_outputs(backbone: MusicnnBackbone, patches: torch.Tensor) -> dict[str, torch.Tensor]:
    """The backbone's per-patch outputs (eval mode, a few patches at a time)."""
    parts = [backbone.network(part) for part in patches.split(backbone.patches_at_once)]
    return {name: torch.cat([part[name] for part in parts]) for name in ("logits", *OUTPUTS)}


def add_audio_outputs(pairs: list[AdapterPair], backbone: MusicnnBackbone) -> None:
    """The backbone's outputs from the audio's log-mel on each pair's patches (computed once)."""
    for pair in pairs:
        if not pair.audio_outputs:
            pair.audio_outputs = network_outputs(backbone, patches_of(pair.target, pair.starts))


def centres(pairs: list[AdapterPair]) -> dict[str, torch.Tensor]:
    """The mean audio embedding of the pairs' patches: the origin of the centred cosines."""
    return {name: torch.cat([p.audio_outputs[name] for p in pairs]).mean(0) for name in OUTPUTS}


def centred_cosine(a: torch.Tensor, b: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a - centre, b - centre, dim=-1)


def fit_adapter(
    pairs: list[AdapterPair],
    backbone: MusicnnBackbone,
    steps: int = STEPS,
    clips_per_step: int = 4,
    patches_per_clip: int = 2,
    lr: float = 2e-3,
    mel_weight: float = 1.0,
    embedding_weight: float = 1.0,
    seed: int = 0,
    log_every: int = 0,
    model: LearnedAdapter | None = None,
) -> LearnedAdapter:
    """`model` (a new one by default) trained further on `pairs` (their audio outputs added first); the backbone stays
    frozen. With `embedding_weight` 0 only the log-mel loss counts."""
    add_audio_outputs(pairs, backbone)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, centre = model or LearnedAdapter(), centres(pairs)
    backbone.eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    for step in range(steps):
        chosen = rng.choice(len(pairs), size=min(clips_per_step, len(pairs)), replace=False)
        mel_loss, patches, targets = 0.0, [], {name: [] for name in ("logits", *OUTPUTS)}
        for i in chosen:
            pair = pairs[i]
            adapted = model(pair.fixed)[: pair.covered]
            mel_loss = mel_loss + F.mse_loss(adapted, pair.target) / len(chosen)
            picks = rng.choice(len(pair.starts), size=min(patches_per_clip, len(pair.starts)), replace=False)
            patches.append(patches_of(adapted, [pair.starts[k] for k in picks]))
            for name in targets:
                targets[name].append(pair.audio_outputs[name][picks])
        loss = mel_weight * mel_loss
        if embedding_weight:
            out = backbone.network(torch.cat(patches))
            want = {name: torch.cat(parts) for name, parts in targets.items()}
            embedding_loss = sum(1 - centred_cosine(out[n], want[n], centre[n]).mean() for n in OUTPUTS)
            tag_loss = F.binary_cross_entropy_with_logits(out["logits"], torch.sigmoid(want["logits"]))
            loss = loss + embedding_weight * (embedding_loss + tag_loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step}: loss {float(loss):.4f} (mel {float(mel_loss):.4f})", flush=True)
    return model.eval()


def train_learned_adapter(
    pairs: list[AdapterPair],
    backbone: MusicnnBackbone,
    mel_steps: int = MEL_STEPS,
    steps: int = STEPS,
    seed: int = 0,
    log_every: int = 0,
) -> tuple[LearnedAdapter, LearnedAdapter]:
    """The adapter after the log-mel phase alone, and after both phases (the learned adapter)."""
    first = fit_adapter(
        pairs, backbone, mel_steps, clips_per_step=8, embedding_weight=0.0, seed=seed, log_every=log_every
    )
    second = fit_adapter(pairs, backbone, steps, seed=seed + 1, log_every=log_every, model=copy.deepcopy(first))
    return first, second


def main(
    root: str = "data/dataset",
    output: str = str(LEARNED_ADAPTER_PATH),
    mel_steps: int = MEL_STEPS,
    steps: int = STEPS,
    seed: int = 0,
    threads: int = 2,
    only: str | None = None,
) -> None:
    """Train the learned adapter on every clip of `root` with audio and a spectrogram (with `only`, a clip list such
    as train_filtered.txt: those of them on it) and save it to `output`."""
    torch.set_num_threads(threads)
    pairs = adapter_pairs(root, only=only)
    print(f"{len(pairs)} clips with audio and a spectrogram ({sum(p.full for p in pairs)} whole)")
    _, model = train_learned_adapter(pairs, load_musicnn("msd"), mel_steps, steps, seed, log_every=max(steps // 6, 1))
    meta = {"clips": str(len(pairs)), "only": only or "", "mel_steps": str(mel_steps), "steps": str(steps)}
    save_learned_adapter(model, output, meta | {"seed": str(seed)})
    print(f"written to {output}")


if __name__ == "__main__":
    fire.Fire(main)

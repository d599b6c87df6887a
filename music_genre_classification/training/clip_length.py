"""Accuracy by clip length: the evidence for the shortest audio the model may judge (MIN_DURATION_S).

python -m music_genre_classification.training.clip_length --model_path outputs/new_artists.ckpt --part val

Crops of each length are cut from real clips of the checkpoint's val or test part (clips never seen in training),
at the start, middle and end of each clip, and classified the way `infer` classifies a file that short (zero
padded to the model's crop); the last row is the whole clips through `infer`'s own path.
"""

from collections import Counter
from pathlib import Path

import fire
import numpy as np
import torch

from music_genre_classification.data.audio import load_audio
from music_genre_classification.serving.folder import audio_files
from music_genre_classification.serving.inference import GenreClassifier, load_checkpoint

LENGTHS_S = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0)


def part_clips(model_path: str, audio_dir: Path, part: str) -> list[tuple[Path, str]]:
    """(audio file, genre) of the clips below `audio_dir` that the checkpoint's split put in `part`."""
    table = load_checkpoint(model_path).get("split_table") or []
    wanted = {row["clip"]: row["genre"] for row in table if row["part"] == part}
    found = [(path, wanted.get(f"{path.parent.name}/{path.stem}")) for path in audio_files(audio_dir).audio]
    return [(path, genre) for path, genre in found if genre]


def crops(wave: np.ndarray, samples: int, count: int = 3) -> list[np.ndarray]:
    """`count` crops of `samples` from the start to the end of `wave`, evenly spaced (fewer if they would repeat)."""
    if len(wave) < samples:
        return []
    starts = sorted({round(i * (len(wave) - samples) / max(count - 1, 1)) for i in range(count)})
    return [wave[s : s + samples] for s in starts]


def accuracy_by_length(
    classifier: GenreClassifier, clips: list[tuple[Path, str]], lengths: tuple[float, ...] = LENGTHS_S
) -> dict[str, list[tuple[str, str]]]:
    """(true genre, answer) for every crop of every length, and for the whole clips ("whole clip")."""
    rate, answers = classifier.sample_rate, {f"{s:g} s": [] for s in lengths}
    for path, genre in clips:
        wave = load_audio(path, rate)
        for seconds in lengths:
            for crop in crops(wave, round(seconds * rate)):
                model_input = classifier.front_end(torch.from_numpy(np.ascontiguousarray(crop)))
                probs = classifier.model.probabilities([model_input])[0]
                answers[f"{seconds:g} s"].append((genre, classifier.genres[int(probs.argmax())]))
    answers["whole clip"] = [(genre, classifier.predict(path).genre) for path, genre in clips]
    return answers


def main(
    model_path: str,
    audio_dir: str = "data/dataset/genres_original",
    part: str = "val",
    lengths: tuple[float, ...] = LENGTHS_S,
) -> None:
    classifier = GenreClassifier.from_checkpoint(model_path, device="cpu")
    clips = part_clips(model_path, Path(audio_dir), part)
    if not clips:
        raise SystemExit(f"error: no audio of the checkpoint's {part} part below {audio_dir}")
    genres = ", ".join(f"{g} {n}" for g, n in Counter(genre for _, genre in clips).items())
    print(f"{len(clips)} clips of the {part} part below {audio_dir}: {genres}")
    print(f"{'length':>10} {'crops':>6} {'right':>6} {'accuracy':>9}  most frequent answer")
    for name, answers in accuracy_by_length(classifier, clips, tuple(lengths)).items():
        if not answers:  # every clip is shorter than this
            print(f"{name:>10} {0:6d} {'-':>6} {'-':>9}  -")
            continue
        right = sum(truth == said for truth, said in answers)
        said, times = Counter(said for _, said in answers).most_common(1)[0]
        share = times / len(answers)
        print(f"{name:>10} {len(answers):6d} {right:6d} {right / len(answers):9.3f}  {said} ({share:.0%})")


if __name__ == "__main__":
    fire.Fire(main)

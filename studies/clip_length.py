"""Accuracy by clip length: the evidence for the shortest audio the model may judge (MIN_DURATION_S).

python -m studies.clip_length --model_path outputs/new_artists.ckpt --source spectrograms --part val \
    [--output docs/results/clip_length.md]

Crops of each length are cut from clips of the checkpoint's val or test part (clips never seen in training), at the
start, middle and end of each clip, and classified the way `infer` classifies a file that short (zero padded to the
model's crop); the last row is the whole clips. The threshold is chosen on the val part, never on test.

--source spectrograms (the default): every clip of the part, from its stored spectrogram (data/dataset/spectrograms).
A crop is the columns that much audio gets from the front end, renormalised as the front end normalises a window of
its own (see `renormalised`); whole clips are scored as `test` scores them. A front-end check first compares such
crops with the front end's spectrogram of the same audio cut from the clips whose audio is at hand.
--source audio: only the clips whose audio is below --audio_dir, cut as audio; whole clips through `infer`.
"""

from collections import Counter
from pathlib import Path

import fire
import numpy as np
import torch

from music_genre_classification.data.audio import load_audio
from music_genre_classification.data.folder import audio_files
from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.classifier import GenreClassifier
from studies.results import Results

LENGTHS_S = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0)
Answers = dict[str, list[tuple[str, str]]]  # row name -> (true genre, answer) per crop


def part_clips(model_path: str, files: list[Path], part: str) -> list[tuple[Path, str]]:
    """(file, genre) of the files (<genre>/<stem>.<ext>) that the checkpoint's split put in `part`."""
    table = load_checkpoint(model_path).get("split_table") or []
    wanted = {row["clip"]: row["genre"] for row in table if row["part"] == part}
    found = [(path, wanted.get(f"{path.parent.name}/{path.stem}")) for path in files]
    return [(path, genre) for path, genre in found if genre]


def crops(wave: np.ndarray, samples: int, count: int = 3) -> list[np.ndarray]:
    """`count` crops of `samples` (along the last axis) from the start to the end of `wave`, evenly spaced (fewer if
    they would repeat): samples of a waveform, or columns of a spectrogram."""
    return [wave[..., s : s + samples] for s in crop_starts(wave.shape[-1], samples, count)]


def crop_starts(length: int, size: int, count: int = 3) -> list[int]:
    if length < size:
        return []
    return sorted({round(i * (length - size) / max(count - 1, 1)) for i in range(count)})


def columns_for(classifier: GenreClassifier, seconds: float) -> int:
    """Columns the front end gives `seconds` of audio."""
    return len(classifier.front_end.column_frames(round(seconds * classifier.sample_rate)))


def renormalised(spec: np.ndarray) -> np.ndarray:
    """Columns cut from a clip's spectrogram as the front end would normalise that much audio on its own.

    A stored value v is (db - low) / -low, db relative to the clip's loudest bin and clamped at -top_db (low: the
    clip's lowest db, mostly -top_db). The front end re-references a window to its own loudest bin, clamps at -top_db
    and min-max normalises: in v that is a shift (the crop's range is within the clip's, so the clamp never bites)
    and a min-max, whatever `low` was. What no cut of columns gives back: the reference and range over every hop
    frame (the columns are every ~3.3rd), and the detail below the clip's floor.
    """
    spec = spec.astype(np.float32)
    low, high = spec.min(), spec.max()
    return (spec - low) / (high - low) if high > low else np.zeros_like(spec)


def audio_accuracy_by_length(
    classifier: GenreClassifier, clips: list[tuple[Path, str]], lengths: tuple[float, ...] = LENGTHS_S
) -> Answers:
    """Crops of audio files through the front end; the whole clips through `infer`'s own path."""
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


@torch.inference_mode()
def spectrogram_accuracy_by_length(
    classifier: GenreClassifier, clips: list[tuple[Path, str]], lengths: tuple[float, ...] = LENGTHS_S
) -> Answers:
    """Renormalised crops of stored spectrograms; the whole spectrograms as `test` scores them."""
    answers: Answers = {f"{s:g} s": [] for s in lengths} | {"whole clip": []}
    for path, genre in clips:
        spec = np.load(path)
        for seconds in lengths:
            specs = [torch.from_numpy(renormalised(c)) for c in crops(spec, columns_for(classifier, seconds))]
            answers[f"{seconds:g} s"] += [(genre, said) for said in _answers(classifier, specs)]
        answers["whole clip"] += [(genre, said) for said in _answers(classifier, [torch.from_numpy(spec).float()])]
    return answers


def _answers(classifier: GenreClassifier, specs: list[torch.Tensor]) -> list[str]:
    if not specs:
        return []
    probs = classifier.model.probabilities(specs)  # the checkpoint's own predictor, as `infer` runs it
    return [classifier.genres[int(i)] for i in probs.argmax(axis=1)]


@torch.inference_mode()
def front_end_check(
    classifier: GenreClassifier, pairs: list[tuple[Path, Path]], lengths: tuple[float, ...] = LENGTHS_S
) -> dict[str, dict[str, float]]:
    """Crops of audio through the front end against the same columns cut from the stored spectrogram, per length:
    mean |difference| renormalised ("cut") and as stored ("stored"), and, for scale, between the audio crop and the
    audio one hop away ("hop"); crops right from the audio and from the cut, crops with the same answer."""
    fe, hop = classifier.front_end, classifier.front_end.params.hop_length
    rows: dict[str, list[dict[str, float]]] = {f"{s:g} s": [] for s in lengths} | {"whole clip": []}

    def compare(truth: torch.Tensor, cut: np.ndarray, later: torch.Tensor | None, genre: str) -> dict[str, float]:
        ours = torch.from_numpy(renormalised(cut)) if later is not None else torch.from_numpy(cut)
        (said_audio, said_cut) = _answers(classifier, [truth]) + _answers(classifier, [ours])
        return {
            "cut": float((truth - ours).abs().mean()),
            "stored": float(np.abs(truth.numpy() - cut).mean()),
            "hop": float((truth - later).abs().mean()) if later is not None else 0.0,
            "audio right": said_audio == genre,
            "cut right": said_cut == genre,
            "same": said_audio == said_cut,
        }

    for audio, stored in pairs:
        wave, spec, genre = (
            load_audio(audio, classifier.sample_rate),
            np.load(stored).astype(np.float32),
            audio.parent.name,
        )
        rows["whole clip"].append(compare(fe(torch.from_numpy(wave)), spec, None, genre))
        frames = fe.column_frames(len(wave)).numpy()  # the hop frame of each stored column
        for seconds in lengths:
            samples = round(seconds * classifier.sample_rate)
            own = fe.column_frames(samples).numpy()
            for start in crop_starts(spec.shape[1], len(own)):
                # the audio whose columns fall nearest the stored ones (their steps differ by a fraction of a frame)
                first = int(np.clip(np.round(np.median(frames[start : start + len(own)] - own)), 0, None)) * hop
                first = min(first, len(wave) - samples)
                moved = first + hop if first + hop + samples <= len(wave) else first - hop  # one hop away
                truth, later = (
                    fe(torch.from_numpy(np.ascontiguousarray(wave[i : i + samples]))) for i in (first, moved)
                )
                rows[f"{seconds:g} s"].append(compare(truth, spec[:, start : start + len(own)], later, genre))
    return {
        name: {"crops": len(found)} | {key: float(np.mean([r[key] for r in found])) for key in found[0]}
        for name, found in rows.items()
        if found
    }


def check_pairs(
    classifier: GenreClassifier, audio_dir: Path, spec_dir: Path, most: int | None = None
) -> list[tuple[Path, Path]]:
    """(audio, stored spectrogram) pairs of whole clips, `most` of them spread over the folder (all if None): audio
    whose front-end spectrogram has the stored number of columns (not the GTZAN clips since cut to 15-20 s)."""
    if most == 0 or not audio_dir.is_dir():
        return []
    pairs = []
    for path in sorted(audio_files(audio_dir).audio):
        stored = spec_dir / path.parent.name / f"{path.stem}.npy"
        if stored.is_file():
            samples = len(load_audio(path, classifier.sample_rate))
            if len(classifier.front_end.column_frames(samples)) == np.load(stored, mmap_mode="r").shape[1]:
                pairs.append((path, stored))
    return [pairs[i * len(pairs) // most] for i in range(most)] if most and len(pairs) > most else pairs


def print_table(answers: Answers) -> list[list[object]]:
    """Prints the table; returns its rows."""
    print(f"{'length':>10} {'crops':>6} {'right':>6} {'accuracy':>9}  most frequent answer")
    rows = []
    for name, said_list in answers.items():
        if not said_list:  # every clip is shorter than this
            print(f"{name:>10} {0:6d} {'-':>6} {'-':>9}  -")
            rows.append([name, 0, "-", "-", "-"])
            continue
        right = sum(truth == said for truth, said in said_list)
        said, times = Counter(said for _, said in said_list).most_common(1)[0]
        share = times / len(said_list)
        print(f"{name:>10} {len(said_list):6d} {right:6d} {right / len(said_list):9.3f}  {said} ({share:.0%})")
        rows.append([name, len(said_list), right, f"{right / len(said_list):.3f}", f"{said} ({share:.0%})"])
    return rows


def main(
    model_path: str,
    source: str = "spectrograms",
    part: str = "val",
    audio_dir: str = "data/dataset/genres_original",
    spec_dir: str = "data/dataset/spectrograms",
    lengths: tuple[float, ...] = LENGTHS_S,
    check_clips: int | None = None,
    output: str | None = None,
) -> None:
    if source not in ("spectrograms", "audio"):
        raise SystemExit(f"error: --source must be spectrograms or audio, not {source!r}")
    classifier = GenreClassifier.from_checkpoint(model_path, device="cpu")
    lengths = tuple(float(s) for s in (lengths if isinstance(lengths, list | tuple) else [lengths]))
    if source == "audio":
        folder = Path(audio_dir)
        clips = part_clips(model_path, audio_files(folder).audio, part)
    else:
        folder = Path(spec_dir)
        stored = SpectrogramParams.from_dataset(folder / "params.json")
        if stored != classifier.front_end.params:
            raise SystemExit(f"error: {folder}/params.json describes {stored}, the model {classifier.front_end.params}")
        clips = part_clips(model_path, sorted(folder.glob("*/*.npy")), part)
    if not clips:
        raise SystemExit(f"error: no clip of the checkpoint's {part} part below {folder}")
    with Results(output, "clip_length") as results:
        if source == "spectrograms" and (pairs := check_pairs(classifier, Path(audio_dir), folder, check_clips)):
            intro = f"front-end check on {len(pairs)} clips of {audio_dir}: crops of the audio through the front end"
            print(intro + " against")
            print(
                "the same columns cut from the stored spectrogram and renormalised; mean absolute difference"
                " (values lie"
            )
            print("in [0, 1]) with the cut, with the cut not renormalised, and with the audio moved by one hop (23 ms)")
            print(f"{'length':>10} {'crops':>6} {'cut':>7} {'stored':>7} {'hop':>7}  accuracy audio / cut  same answer")
            rows = []
            for name, r in front_end_check(classifier, pairs, lengths).items():
                hop = f"{r['hop']:7.4f}" if name != "whole clip" else f"{'-':>7}"
                print(
                    f"{name:>10} {r['crops']:6d} {r['cut']:7.4f} {r['stored']:7.4f} {hop}"
                    f"  {r['audio right']:14.3f} / {r['cut right']:.3f}  {r['same']:11.0%}"
                )
                right = f"{r['audio right']:.3f} / {r['cut right']:.3f}"
                rows.append(
                    [name, r["crops"], f"{r['cut']:.4f}", f"{r['stored']:.4f}", hop.strip(), right, f"{r['same']:.0%}"]
                )
            print()
            header = ["length", "crops", "cut", "stored", "hop", "accuracy audio / cut", "same answer"]
            results.table(f"Front-end check on {len(pairs)} clips:", header, rows)
        genres = ", ".join(f"{g} {n}" for g, n in Counter(genre for _, genre in clips).items())
        print(f"{len(clips)} clips of the {part} part below {folder}: {genres}")
        score = audio_accuracy_by_length if source == "audio" else spectrogram_accuracy_by_length
        rows = print_table(score(classifier, clips, lengths))
        header = ["length", "crops", "right", "accuracy", "most frequent answer"]
        results.table(f"{len(clips)} clips of the {part} part ({source}):", header, rows)


if __name__ == "__main__":
    fire.Fire(main)

"""Assigning clips to train/val/test: random stratified (optionally by groups such as artists), fixed lists
(Sturm's fault-filtered), a manifest's split column, or all-test.

`assign(clips, columns)`: clips maps clip id -> genre; columns holds per-clip columns of a manifest
("artist", "split": clip id -> value) that some splits use.
"""

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from music_genre_classification.data.audio import is_audio_file
from music_genre_classification.data.dataset import DataError

PARTS = ("train", "val", "test")
LIST_DIR = Path(__file__).parent / "splits"


def stratified(ids_by_genre: dict[str, list[str]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Shuffle each genre's clips with `seed` and cut them by `fractions`; the first part takes the rounding."""
    rng = np.random.default_rng(seed)
    parts: dict[str, str] = {}
    for genre in sorted(ids_by_genre):
        ids = sorted(ids_by_genre[genre])
        order = [ids[i] for i in rng.permutation(len(ids))]
        # every part asked for gets at least one clip of every genre, so a rare genre is scored too
        sizes = {part: max(1, round(frac * len(ids))) if frac > 0 else 0 for part, frac in fractions.items()}
        first = next(iter(fractions))
        sizes[first] = len(ids) - sum(v for k, v in sizes.items() if k != first)
        if sizes[first] < 1:
            raise too_few(genre, f"{len(ids)} clip(s)", fractions)
        start = 0
        for part, size in sizes.items():
            parts.update({clip: part for clip in order[start : start + size]})
            start += size
    return parts


def too_few(genre: str, what: str, fractions: dict[str, float]) -> DataError:
    wanted = [p for p, f in fractions.items() if f > 0]
    return DataError(
        f"genre {genre!r} has {what}: too few for one in each of {', '.join(wanted)}; "
        f"drop such genres with datamodule.min_clips=N, or change the split fractions"
    )


def grouped(clips: dict[str, str], groups: dict[str, str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Whole groups (e.g. artists) to parts, so that no group is on two sides, each genre near `fractions`.

    Groups are taken largest first (ties in a seeded order); each goes to the part furthest below its share of the
    group's genres, a part that lacks one of them first.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for clip in sorted(clips):
        members[groups.get(clip) or f"clip:{clip}"].append(clip)  # a clip of no known group is its own group
    names = sorted(members)
    order = sorted(
        (names[i] for i in np.random.default_rng(seed).permutation(len(names))), key=lambda n: -len(members[n])
    )
    totals, wanted = Counter(clips.values()), [p for p, f in fractions.items() if f > 0]
    have = {part: Counter() for part in wanted}

    def need(part: str, genres: Counter) -> float:
        return sum(
            n * ((fractions[part] * totals[g] - have[part][g]) / totals[g] + (have[part][g] == 0))
            for g, n in genres.items()
        )

    parts = {}
    for name in order:
        genres = Counter(clips[c] for c in members[name])
        part = max(wanted, key=lambda p: need(p, genres))
        have[part].update(genres)
        parts.update(dict.fromkeys(members[name], part))
    for genre in sorted(totals):
        if any(have[p][genre] == 0 for p in wanted):
            count = len({n for n in members if any(clips[c] == genre for c in members[n])})
            raise too_few(genre, f"clips of only {count} group(s) (artists)", fractions)
    return parts


def by_genre(clips: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for clip, genre in clips.items():
        groups[genre].append(clip)
    return groups


class RandomSplit:
    """Stratified by genre, by clip, reproducible from the seed; with `group_by=artist`, whole artists (from the
    manifest's artist column, or `artists`: a GTZANindex.txt-style file) go to one part each. With `folds` = K,
    train + val are cut into K folds (of whole artists with group_by) and fold `fold` is the val part; the test part
    is the same for every fold."""

    name = "random"

    def __init__(
        self,
        train: float = 0.7,
        val: float = 0.15,
        test: float = 0.15,
        seed: int = 42,
        group_by: str | None = None,
        artists: str | None = None,
        folds: int = 0,
        fold: int = 0,
    ):
        check_fold(folds, fold)
        if min(train, val, test) < 0 or abs(train + val + test - 1) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {train}/{val}/{test}")
        if group_by not in (None, "artist"):
            raise ValueError(f"split.group_by must be artist or null, not {group_by!r}")
        self.fractions = {"train": train, "val": val, "test": test}
        self.seed, self.group_by = seed, group_by
        self.artists = read_artists(artists) if artists else {}
        self.folds, self.fold = folds, fold

    def assign(self, clips: dict[str, str], columns: dict | None = None) -> dict[str, str]:
        fractions = self.fractions
        if self.folds:
            fractions = {"train": fractions["train"] + fractions["val"], "test": fractions["test"]}
        groups = {}
        if self.group_by:
            groups = self.artists | {c: a for c, a in ((columns or {}).get("artist") or {}).items() if a}
            if not any(c in groups for c in clips):
                raise DataError("split.group_by=artist: no clip has an artist (a manifest's artist column)")
            parts = grouped(clips, groups, fractions, self.seed)
        else:
            parts = stratified(by_genre(clips), fractions, self.seed)
        if self.folds:
            rest = {c: clips[c] for c, p in parts.items() if p == "train"}
            parts |= fold_parts(rest, groups, self.folds, self.fold, self.seed)
        return parts


class ManifestSplit:
    """The parts a manifest's split column gives (train, val, test)."""

    name = "manifest"

    def assign(self, clips: dict[str, str], columns: dict | None = None) -> dict[str, str]:
        parts = (columns or {}).get("split") or {}
        unsplit = [c for c in clips if not parts.get(c)]
        if unsplit:
            raise DataError(f"split=manifest: {unsplit[0]} (and {len(unsplit) - 1} more) has no split in the manifest")
        return {c: parts[c] for c in clips}


class ListSplit:
    """Clips named in list files (`genre/genre.000NN.wav` per line); clips absent from the data are just absent, and a
    part whose list is null is empty (split=lists split.val=null: no val part, the last epoch is kept).

    When no clip of the test list is present (the 639-clip development set holds only Sturm's train and valid
    lists), the valid list becomes the test part and `val_fraction` of the train list, stratified, the val part.
    With `folds` = K the train list is cut into K folds instead (whole artists when `artists` is given) and fold
    `fold` is the val part: K trainings, one per fold, each validated on clips the others train on (cross-fitting,
    see `ensemble`), so that every clip of the train list serves both.
    """

    name = "lists"

    def __init__(
        self,
        train: str | None,
        val: str | None,
        test: str | None,
        val_fraction: float = 0.15,
        seed: int = 42,
        name: str = "",
        artists: str | None = None,
        folds: int = 0,
        fold: int = 0,
    ):
        check_fold(folds, fold)
        self.lists = {"train": train, "val": val, "test": test}
        self.val_fraction = val_fraction
        self.folds, self.fold = folds, fold
        self.seed = seed
        self.name = name or self.name
        self.artists = read_artists(artists) if artists else {}

    def assign(self, clips: dict[str, str], columns: dict | None = None) -> dict[str, str]:
        listed = {part: [c for c in read_list(path) if c in clips] if path else [] for part, path in self.lists.items()}
        if not listed["test"]:
            print(f"split {self.name}: no clip of the test list is in the data; testing on the val list instead")
            train = {c: clips[c] for c in listed["train"]}
            if self.folds:
                parts = fold_parts(train, self.artists, self.folds, self.fold, self.seed)
            elif self.artists:  # val artists unseen in training, as the test's are: val/loss then picks for new artists
                parts = artist_disjoint(by_genre(train), self.artists, self.val_fraction, self.seed)
            else:
                fractions = {"train": 1 - self.val_fraction, "val": self.val_fraction}
                parts = stratified(by_genre(train), fractions, self.seed)
            return parts | {c: "test" for c in listed["val"]}
        return {clip: part for part, ids in listed.items() for clip in ids}


def artist_disjoint(ids_by_genre: dict[str, list[str]], artists: dict[str, str], val: float, seed: int) -> dict:
    """Per genre, whole artists (in a seeded order) go to val until it holds about `val` of the genre's clips."""
    rng = np.random.default_rng(seed)
    parts: dict[str, str] = {}
    for genre in sorted(ids_by_genre):
        groups: dict[str, list[str]] = defaultdict(list)
        for clip in sorted(ids_by_genre[genre]):
            groups[artists.get(clip) or clip].append(clip)  # a clip of unknown artist is its own group
        names = sorted(groups)
        want, taken = val * len(ids_by_genre[genre]), 0
        for i in rng.permutation(len(names)):
            group = groups[names[i]]
            part = "val" if taken < want and abs(taken + len(group) - want) <= abs(taken - want) else "train"
            taken += len(group) if part == "val" else 0
            parts.update(dict.fromkeys(group, part))
    # an artist of two genres may have been drawn for val in one and train in the other: all of it trains then
    trained = {artists[c] for c, part in parts.items() if part == "train" and c in artists}
    return {c: "train" if artists.get(c) in trained else part for c, part in parts.items()}


def check_fold(folds: int, fold: int) -> None:
    if folds and not (folds >= 2 and 0 <= fold < folds):
        raise ValueError(f"split.fold must be one of 0..{folds - 1} and split.folds at least 2, got {fold}/{folds}")


def fold_parts(clips: dict[str, str], artists: dict[str, str], folds: int, fold: int, seed: int) -> dict[str, str]:
    """Fold `fold` of `folds_of` as the val part, the other folds as train."""
    return {c: "val" if k == fold else "train" for c, k in folds_of(clips, artists, folds, seed).items()}


def folds_of(clips: dict[str, str], artists: dict[str, str], folds: int, seed: int) -> dict[str, int]:
    """Whole artists (largest first, ties in a seeded order) each to the fold holding the fewest clips of the
    artist's genres so far (of all clips on a tie): K folds of about equal size and genre mix, no artist in two."""
    groups: dict[str, list[str]] = defaultdict(list)
    for clip in sorted(clips):
        groups[artists.get(clip) or clip].append(clip)  # a clip of unknown artist is its own group
    names = sorted(groups)
    order = sorted(
        (names[i] for i in np.random.default_rng(seed).permutation(len(names))), key=lambda n: -len(groups[n])
    )
    have, totals, fold_of = [Counter() for _ in range(folds)], [0] * folds, {}
    for name in order:
        genres = Counter(clips[c] for c in groups[name])
        k = min(range(folds), key=lambda f: (sum(n * have[f][g] for g, n in genres.items()), totals[f]))
        have[k].update(genres)
        totals[k] += len(groups[name])
        fold_of.update(dict.fromkeys(groups[name], k))
    return fold_of


class AllTest:
    """Every clip is test data: for scoring a trained model on another labelled collection."""

    name = "all"

    def assign(self, clips: dict[str, str], columns: dict | None = None) -> dict[str, str]:
        return dict.fromkeys(clips, "test")


def assign_parts(
    split, split_table: list[dict] | None, clips: dict[str, str], root: str | Path, columns: dict | None = None
) -> dict[str, str]:
    """Clip id -> part: from `split`, or replayed from a stored split table (a checkpoint's) that tests some clip."""
    if split_table is None:
        return split.assign(clips, columns)
    part_of = {row["clip"]: row["part"] for row in split_table if row["clip"] in clips}
    if not any(p == "test" for p in part_of.values()):
        raise DataError(f"{root}: holds no clip of the checkpoint's test split; add split=all to score all")
    return part_of


def write_split_table(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip", "genre", "part"])
        writer.writeheader()
        writer.writerows(rows)


def _find(path: str | Path) -> Path:
    path = Path(path)
    return LIST_DIR / path if not path.is_absolute() and not path.exists() else path


def read_artists(path: str | Path) -> dict[str, str]:
    """clip id (genre/genre.000NN) -> artist, from Sturm's GTZANindex.txt (`blues.00000.wav ::: artist ::: title`)."""
    artists = {}
    for line in _find(path).read_text(errors="replace").splitlines():
        fields = [f.strip() for f in line.split(":::")]
        if len(fields) >= 2 and not line.startswith("#") and fields[1]:
            clip = fields[0].removesuffix(".wav")
            artists[f"{clip.split('.')[0]}/{clip}"] = fields[1].lower()
    return artists


def read_list(path: str | Path) -> list[str]:
    path = _find(path)
    lines = [line.strip() for line in path.read_text().splitlines()]
    # a line names a file (`rock/song.mp3`) or a clip id (`rock/song`): ids have no audio or .npy suffix
    return [str(Path(line).with_suffix("")) if _is_clip_file(line) else line for line in lines if line]


def _is_clip_file(line: str) -> bool:
    return is_audio_file(Path(line)) or line.lower().endswith(".npy")

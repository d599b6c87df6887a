"""Assigning clips to train/val/test: random stratified, fixed lists (Sturm's fault-filtered), or all-test."""

from collections import defaultdict
from pathlib import Path

import numpy as np

PARTS = ("train", "val", "test")
LIST_DIR = Path(__file__).parent / "splits"


def stratified(ids_by_genre: dict[str, list[str]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Shuffle each genre's clips with `seed` and cut them by `fractions`; the first part takes the rounding."""
    rng = np.random.default_rng(seed)
    parts: dict[str, str] = {}
    for genre in sorted(ids_by_genre):
        ids = sorted(ids_by_genre[genre])
        order = [ids[i] for i in rng.permutation(len(ids))]
        sizes = {part: round(frac * len(ids)) for part, frac in fractions.items()}
        first = next(iter(fractions))
        sizes[first] = len(ids) - sum(v for k, v in sizes.items() if k != first)
        start = 0
        for part, size in sizes.items():
            parts.update({clip: part for clip in order[start : start + size]})
            start += size
    return parts


def by_genre(clips: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for clip, genre in clips.items():
        groups[genre].append(clip)
    return groups


class RandomSplit:
    """Stratified by genre, by clip, reproducible from the seed."""

    name = "random"

    def __init__(self, train: float = 0.7, val: float = 0.15, test: float = 0.15, seed: int = 42):
        if min(train, val, test) < 0 or abs(train + val + test - 1) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {train}/{val}/{test}")
        self.fractions = {"train": train, "val": val, "test": test}
        self.seed = seed

    def assign(self, clips: dict[str, str]) -> dict[str, str]:
        return stratified(by_genre(clips), self.fractions, self.seed)


class ListSplit:
    """Clips named in list files (`genre/genre.000NN.wav` per line); clips absent from the data are just absent.

    When no clip of the test list is present (the 639-clip development set holds only Sturm's train and valid
    lists), the valid list becomes the test part and `val_fraction` of the train list, stratified, the val part.
    """

    name = "lists"

    def __init__(self, train: str, val: str, test: str, val_fraction: float = 0.15, seed: int = 42, name: str = ""):
        self.lists = {"train": train, "val": val, "test": test}
        self.val_fraction = val_fraction
        self.seed = seed
        self.name = name or self.name

    def assign(self, clips: dict[str, str]) -> dict[str, str]:
        listed = {part: [c for c in read_list(path) if c in clips] for part, path in self.lists.items()}
        if not listed["test"]:
            print(f"split {self.name}: no clip of the test list is in the data; testing on the val list instead")
            train = {c: clips[c] for c in listed["train"]}
            fractions = {"train": 1 - self.val_fraction, "val": self.val_fraction}
            parts = stratified(by_genre(train), fractions, self.seed)
            return parts | {c: "test" for c in listed["val"]}
        return {clip: part for part, ids in listed.items() for clip in ids}


class AllTest:
    """Every clip is test data: for scoring a trained model on another labelled collection."""

    name = "all"

    def assign(self, clips: dict[str, str]) -> dict[str, str]:
        return dict.fromkeys(clips, "test")


def read_list(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = LIST_DIR / path
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line.rsplit(".", 1)[0] if line.endswith(".wav") else line for line in lines if line]

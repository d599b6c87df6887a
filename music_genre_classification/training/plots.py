"""Training curves and confusion-matrix PNGs."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], plot_dir: Path) -> list[Path]:
    """One PNG per quantity (loss, acc, f1) with its train and val curves over epochs."""
    paths = []
    for name in ("loss", "acc", "f1"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for stage in ("train", "val"):
            points = [(row["epoch"], row[f"{stage}/{name}"]) for row in history if f"{stage}/{name}" in row]
            if points:
                ax.plot(*zip(*points), marker=".", label=stage)
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(plot_dir / f"curve_{name}.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return paths


def plot_confusion(confusion: np.ndarray, genres: list[str], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(confusion, cmap="Blues")
    ax.set(xticks=range(len(genres)), yticks=range(len(genres)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(genres, rotation=45, ha="right")
    ax.set_yticklabels(genres)
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            ax.text(j, i, int(count), ha="center", va="center", color="white" if count > confusion.max() / 2 else "k")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_reliability(bins: dict[str, dict], path: Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per `bins` entry
    (e.g. before and after temperature scaling), with the diagonal of perfect calibration."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for name, table in bins.items():
        used = table["counts"] > 0
        label = f"{name} (ECE {table['ece']:.3f})"
        ax.plot(table["confidence"][used], table["accuracy"][used], marker="o", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy", title="reliability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

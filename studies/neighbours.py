"""How well a model's embeddings find music of the same genre: for each test clip of the checkpoint's own split, its
k nearest training clips (cosine, faiss) in a library table made by `embed` over the clips' spectrograms.

python -m studies.neighbours --index library.parquet --model_path model.ckpt [--k 5] \
    [--output docs/results/neighbours.md]   (several: --index a.parquet,b.parquet --model_path a.ckpt,b.ckpt)
"""

from collections import Counter
from pathlib import Path

import fire
import numpy as np

from music_genre_classification.config import UserError
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.serving.library import file_sha256, read_library
from music_genre_classification.serving.similar import normalised
from studies.results import Results


def neighbour_agreement(index: str, model_path: str, k: int = 5, query_part: str = "test") -> dict:
    """The share of the k nearest train clips that have the query clip's genre (mean over the query clips), and how
    often their majority genre is it (kNN accuracy)."""
    import faiss

    library, ckpt = read_library(Path(index)), load_checkpoint(model_path)
    if library.meta.get("model_sha256") != file_sha256(Path(model_path)):
        raise UserError(f"{index}: not embedded by {model_path}")
    part = {row["clip"]: row["part"] for row in ckpt.get("split_table") or []}
    if not part:
        raise UserError(f"{model_path}: holds no split table")
    ids = [f"{Path(p).parent.name}/{Path(p).stem}" for p in library.paths]
    train = [i for i, c in enumerate(ids) if part.get(c) == "train"]
    queries = [i for i, c in enumerate(ids) if part.get(c) == query_part]
    if not train or not queries:
        raise UserError(f"{index}: no {query_part} or no train clip of the checkpoint's split in the library")
    embeddings, labels = normalised(library.embeddings), np.array(library.labels)
    vectors = faiss.IndexFlatIP(embeddings.shape[1])
    vectors.add(embeddings[train])
    _, found = vectors.search(embeddings[queries], k)
    neighbour_labels = labels[np.array(train)[found]]  # [queries, k]
    same = neighbour_labels == labels[queries][:, None]
    majority = [Counter(row).most_common(1)[0][0] for row in neighbour_labels]  # ties: the nearer genre
    return {
        "queries": len(queries),
        "train": len(train),
        "k": k,
        "same_genre": float(same.mean()),
        "knn_accuracy": float(np.mean(np.array(majority) == labels[queries])),
        "model_accuracy": float(np.mean(np.array(library.genres)[queries] == labels[queries])),
    }


def main(index: str, model_path: str, k: int = 5, part: str = "test", output: str | None = None) -> None:
    """INDEX and MODEL_PATH may each name several tables and their checkpoints, comma-separated, in the same order:
    one row per model, on the same clips when the checkpoints share a split."""

    def names(value) -> list[str]:  # Fire reads "a,b" as a tuple
        return [n for v in ([value] if isinstance(value, str) else value) for n in str(v).split(",")]

    pairs = list(zip(names(index), names(model_path), strict=True))
    header = ["model", f"{part} clips", "train clips", "k", "share the genre", "majority vote right", "model accuracy"]
    rows = []
    with Results(output, "neighbours") as results:
        for table, checkpoint in pairs:
            result = neighbour_agreement(table, checkpoint, k, part)
            kind = load_checkpoint(checkpoint)["hyper_parameters"].get("kind", "cnn")
            print(
                f"{kind}: {result['queries']} {part} clips, their {k} nearest of {result['train']} train clips: "
                f"{result['same_genre']:.3f} share the genre; majority vote right {result['knn_accuracy']:.3f} "
                f"(the model's own accuracy on them: {result['model_accuracy']:.3f})"
            )
            row = [kind, result["queries"], result["train"], k, f"{result['same_genre']:.3f}"]
            rows.append([*row, f"{result['knn_accuracy']:.3f}", f"{result['model_accuracy']:.3f}"])
        title = f"Nearest train clips of the {part} clips (cosine of the embeddings `embed` stored):"
        results.table(title, header, rows)


if __name__ == "__main__":
    fire.Fire(main)

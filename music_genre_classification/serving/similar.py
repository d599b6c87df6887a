"""`similar`: the tracks of a library most like a query, by cosine similarity of their embeddings.

The vector index (faiss IndexFlatIP over unit-length embeddings: exact cosine, fine up to ~10^6 tracks) is built
once and saved beside the table (library.parquet -> library.faiss), with what it was built from; a table changed
since (`embed` run again) makes it stale, and it is built anew.
"""

import json
import sys
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError
from music_genre_classification.serving.library import Library, file_sha256, read_library


def normalised(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.ascontiguousarray(embeddings / np.maximum(norms, 1e-12), np.float32)


def vector_index(table: Path, library: Library):
    """The faiss index of the library's embeddings, read from beside the table, or built and saved there."""
    import faiss

    path, about = table.with_suffix(".faiss"), table.with_suffix(".faiss.json")
    stat = table.stat()
    source = {"table": table.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "tracks": len(library)}
    if path.is_file() and about.is_file():
        try:
            if json.loads(about.read_text()) == source:
                return faiss.read_index(str(path))
        except (ValueError, RuntimeError):  # a damaged index or description: built anew
            pass
    index = faiss.IndexFlatIP(library.embeddings.shape[1])
    index.add(normalised(library.embeddings))
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    about.write_text(json.dumps(source))
    print(f"index of {len(library)} tracks built: {path}")
    return index


# A new file's nearest track is "close" when it is at least as close as all but this share of the library's own
# tracks are to their nearest other track (docs/non_music.md says why a floor from the library, not a constant)
FAR_SHARE = 0.01
SAMPLED_TRACKS = 2000  # tracks of a large library whose nearest neighbours set the floor (exact search of each)


def closeness_floor(index, library: Library) -> float | None:
    """The cosine below which a neighbour is farther than the library's tracks are from their own nearest: the
    FAR_SHARE quantile of (a sample of) its tracks' nearest-other-track cosines; None for a library under 2 tracks."""
    n = len(library)
    if n < 2:
        return None
    picks = np.random.default_rng(0).choice(n, min(n, SAMPLED_TRACKS), replace=False)
    scores, found = index.search(normalised(library.embeddings[picks]), 2)
    nearest = [
        max(s for s, j in zip(row_s, row_j) if j != i and j >= 0) for i, row_s, row_j in zip(picks, scores, found)
    ]
    return float(np.quantile(nearest, FAR_SHARE))


def query_embedding(library: Library, audio_path: str | None, path: str | None, model_path: str | None) -> tuple:
    """(embedding, index of the query in the library or None, what the query is: its path, predicted genre and
    folder label) for a track of the library or a new file."""
    if path is not None:
        wanted = str(Path(path).resolve())
        if wanted not in library.paths:
            raise UserError(f"{path}: not in the library (embed it, or give it with --audio_path)")
        i = library.paths.index(wanted)
        return library.embeddings[i], i, (wanted, library.genres[i], library.labels[i])
    from music_genre_classification.models.classifier import GenreClassifier
    from music_genre_classification.serving.batch import check_source

    source = check_source(audio_path)
    if not source.is_file():
        raise UserError(f"{source}: give one audio file to compare with the library")
    model = Path(model_path or library.meta.get("model_path", ""))
    made_by = library.meta.get("model_sha256")
    if not model.is_file():
        raise UserError(f"{model}: the checkpoint that made the library is not there; give it with --model_path")
    if file_sha256(model) != made_by:
        raise UserError(f"{model}: not the checkpoint that made the library (SHA-256 {made_by}); give that one")
    classifier = GenreClassifier.from_checkpoint(model)
    ((_, prediction, error),) = list(classifier.predict_many([source], 1, embeddings=True))
    if error:
        raise UserError(error)
    if not prediction.music:
        message = f"warning: {source}: does not sound like music ({prediction.not_music}); its neighbours mean little"
        print(message, file=sys.stderr)
    return prediction.embedding, None, (str(source), prediction.genre, None)


def run_similar(
    index: str,
    audio_path: str | None = None,
    path: str | None = None,
    top: int = 10,
    model_path: str | None = None,
) -> list[tuple[float, int]]:
    """The tracks of a library table most similar to a new file (--audio_path) or to a track of it (--path).

    By cosine similarity of embeddings (a faiss index saved beside the table); a new file is embedded by the
    library's own model.

    The `similar` command: prints and returns (cosine similarity, track) of the `top` most similar tracks."""
    if (audio_path is None) == (path is None):
        raise UserError("give either --audio_path (a new file) or --path (a track of the library)")
    table = Path(index)
    library = read_library(table)
    embedding, itself, (query, genre, label) = query_embedding(library, audio_path, path, model_path)
    index = vector_index(table, library)
    scores, found = index.search(normalised(embedding[None]), min(top + (itself is not None), len(library)))
    results = [(float(s), int(i)) for s, i in zip(scores[0], found[0]) if i >= 0 and i != itself][:top]
    floor = closeness_floor(index, library) if itself is None and results else None
    if floor is not None and results[0][0] < floor:
        print(
            f"warning: {audio_path}: nothing in the library is close (best cosine {results[0][0]:.3f}; "
            f"{1 - FAR_SHARE:.0%} of its tracks have a neighbour at {floor:.3f} or closer)",
            file=sys.stderr,
        )
    print(f"query: {query}\n  genre: {genre} (predicted)" + (f", label: {label} (its folder)" if label else ""))
    # each neighbour's genre as the model predicts it, and the genre its folder names (the label)
    print(f"{'rank':>4}  {'cosine':>6}  {'neighbour genre':<15}  {'label':<10} path")
    for rank, (score, i) in enumerate(results, 1):
        print(f"{rank:>4}  {score:6.3f}  {library.genres[i]:<15}  {library.labels[i] or '-':<10} {library.paths[i]}")
    return results

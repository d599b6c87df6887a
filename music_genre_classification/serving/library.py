"""A library table: per track its embedding, genre, probabilities and duration, as Parquet or .npz (`embed`).

`embed` writes its rows as they come to a journal beside the output (a ResultTable, resumable like `infer`'s
tables); when every track is done the journal becomes the table, whose metadata names the checkpoint that made it
(path and SHA-256), so that `similar` can embed a query with the same model, and refuse another.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError, first_line
from music_genre_classification.data.folder import ResultTable, check_writable
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.serving.batch import FolderRows, check_source, decode_embedding, folder_job

LIBRARY_FORMATS = (".parquet", ".npz")


@dataclass
class Library:
    """The tracks of a library table that have an embedding (failed files are kept in the table, not here)."""

    paths: list[str]
    labels: list[str]  # the genre named by the track's folder, or ""
    genres: list[str]  # predicted
    probabilities: np.ndarray  # [tracks, model genres]
    durations: np.ndarray
    embeddings: np.ndarray  # [tracks, dim] float32
    meta: dict  # model_path, model_sha256, genres, dim

    def __len__(self) -> int:
        return len(self.paths)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_embed(
    model_path: str,
    audio_path: str,
    output_path: str,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
) -> bool:
    """Per track below a folder: the model's embedding, genre, probabilities and duration, as a library table.

    Audio, or spectrograms (.npy + params.json); --output_path .parquet/.npz (resumable); --engine ray as for infer.

    The `embed` command; returns True when some file failed (the exit code says so)."""
    source, output = check_source(audio_path, engine), Path(output_path)
    if output.suffix not in LIBRARY_FORMATS:
        raise UserError(f"{output}: a library table is {' or '.join(LIBRARY_FORMATS)}")
    check_writable(output)
    classifier = GenreClassifier.from_checkpoint(model_path)
    meta = {
        "model_path": str(Path(model_path).resolve()),
        "model_sha256": file_sha256(Path(model_path)),
        "genres": classifier.genres,
    }
    if output.is_file() and output.stat().st_size:
        made_by = read_meta(output).get("model_sha256")
        if made_by != meta["model_sha256"]:
            raise UserError(f"{output}: made by another checkpoint (SHA-256 {made_by}); choose a new output file")
    rows = FolderRows(tuple(classifier.genres), embeddings=True)
    journal_path = output.with_name(f"{output.name}.{meta['model_sha256'][:12]}.rows.jsonl")
    seed = not journal_path.exists() and output.is_file() and output.stat().st_size
    journal = ResultTable(journal_path, rows.columns())
    if seed:  # a finished table grows: its rows become the journal's, and only new files are embedded
        journal.add_rows(table_rows(output))
    if source.is_dir():
        failures = folder_job(classifier, model_path, source, journal, rows, batch_size, engine, address, output)
    else:  # a library of one track
        todo, failures = journal.todo([str(source.resolve())]), 0
        for result in classifier.predict_many([Path(p) for p in todo], 1, embeddings=True):
            journal.add(row := rows(*result))
            failures += bool(row["error"])
            print(f"{row['path']}\t" + (f"error: {row['error']}" if row["error"] else row["genre"]))
    write_library(journal.rows(), classifier.genres, meta, output)
    journal.close()
    journal_path.unlink()
    return failures > 0


def write_library(rows: list[dict], genres: list[str], meta: dict, output: Path) -> None:
    """The journal's rows as the table, written whole to a temporary file first (a cut-off write loses nothing)."""
    rows = sorted(rows, key=lambda row: row["path"])
    good = [row for row in rows if not row["error"]]
    dim = len(decode_embedding(good[0]["embedding"])) if good else 0
    embeddings = np.zeros((len(rows), dim), np.float32)
    for i, row in enumerate(rows):
        if not row["error"]:
            embeddings[i] = decode_embedding(row["embedding"])
    meta = {**meta, "dim": dim}
    text = {c: [str(row.get(c) or "") for row in rows] for c in ("path", "label", "genre", "error", "warning")}
    probabilities = np.array([[_number(row.get(g)) for g in genres] for row in rows], np.float32).reshape(
        -1, len(genres)
    )
    durations = np.array([_number(row.get("duration_s")) for row in rows], np.float64)
    tmp = output.with_name(output.name + ".tmp" + output.suffix)
    if output.suffix == ".npz":
        with open(tmp, "wb") as f:
            np.savez(
                f,
                **text,
                probabilities=probabilities,
                duration_s=durations,
                embedding=embeddings,
                meta=np.array(json.dumps(meta)),
            )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {c: pa.array(v, pa.string()) for c, v in text.items() if c in ("path", "label", "genre")}
        columns |= {g: pa.array(probabilities[:, i]) for i, g in enumerate(genres)}
        columns |= {
            "duration_s": pa.array(durations),
            "error": pa.array(text["error"]),
            "warning": pa.array(text["warning"]),
        }
        flat = pa.array(embeddings.reshape(-1))
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim) if dim else pa.nulls(len(rows))
        table = pa.table(columns).replace_schema_metadata({"music_genre_classification": json.dumps(meta)})
        pq.write_table(table, tmp)
    tmp.replace(output)


def _number(value: object) -> float:
    return float(value) if value not in (None, "") else float("nan")


def read_meta(path: Path) -> dict:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(b"music_genre_classification", b"{}"))


def _columns(path: Path) -> dict:
    """Every column of a library table as numpy arrays, and its metadata under "meta"."""
    if not path.is_file():
        raise UserError(f"{path}: no such library table (make one with `embed`)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                columns = {k: data[k] for k in data.files}
            columns["meta"] = json.loads(str(columns["meta"]))
            return columns
        if path.suffix != ".parquet":
            raise UserError(f"{path}: a library table is {' or '.join(LIBRARY_FORMATS)}")
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"music_genre_classification", b"{}"))
        columns = {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names if c != "embedding"}
        dim = meta.get("dim", 0)
        flat = table["embedding"].combine_chunks().flatten().to_numpy() if dim else np.zeros(0, np.float32)
        columns["embedding"] = flat.reshape(len(table), dim)
        columns["probabilities"] = np.stack([columns[g] for g in meta["genres"]], 1) if len(table) else None
        columns["meta"] = meta
        return columns
    except UserError:
        raise
    except Exception as err:  # pyarrow and numpy raise many types for a file that is not such a table
        raise UserError(f"{path}: not a library table made by `embed` ({first_line(err)})") from None


def table_rows(path: Path) -> list[dict]:
    """A library table as journal rows (how `embed` resumes from a finished table)."""
    from music_genre_classification.serving.batch import encode_embedding

    columns = _columns(path)
    genres, rows = columns["meta"]["genres"], []
    for i in range(len(columns["path"])):
        row = {c: str(columns[c][i]) for c in ("path", "label", "genre", "error", "warning")}
        if not row["error"]:
            row |= {g: float(columns["probabilities"][i, j]) for j, g in enumerate(genres)}
            row |= {
                "duration_s": float(columns["duration_s"][i]),
                "embedding": encode_embedding(columns["embedding"][i]),
            }
        rows.append(row)
    return rows


def read_library(path: Path) -> Library:
    """The tracks of a table made by `embed` that have an embedding; a UserError if there is none."""
    columns = _columns(path)
    good = [i for i, error in enumerate(columns["error"]) if not error]
    if not good:
        raise UserError(f"{path}: holds no embedded track")
    return Library(
        paths=[str(columns["path"][i]) for i in good],
        labels=[str(columns["label"][i]) for i in good],
        genres=[str(columns["genre"][i]) for i in good],
        probabilities=np.asarray(columns["probabilities"])[good],
        durations=np.asarray(columns["duration_s"])[good],
        embeddings=np.ascontiguousarray(columns["embedding"][good], np.float32),
        meta=columns["meta"],
    )

"""Folder jobs (infer, embed, features): the audio files below a folder, and a resumable table of one row per file."""

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock, Timeout

from music_genre_classification.config import UserError
from music_genre_classification.data.audio import is_audio_file

TABLE_FORMATS = (".csv", ".jsonl")


class Listing(NamedTuple):
    audio: list[Path]  # resolved, sorted, each file once however many links lead to it
    ignored: int  # other files (not audio by their extension)
    skipped: list[str]  # what could not be looked at, and why: broken links, link loops, unreadable folders


def track_files(folder: Path) -> tuple[Listing, Path | None]:
    """The tracks below `folder`: its audio files, or its .npy spectrograms when a params.json describes them (the
    layout of data/dataset/spectrograms); and that params.json."""
    params = folder / "params.json"
    return (
        (audio_files(folder, lambda p: p.suffix == ".npy"), params) if params.is_file() else (audio_files(folder), None)
    )


def audio_files(folder: Path, wanted: Callable[[Path], bool] = is_audio_file) -> Listing:
    """Audio files below `folder` (or other `wanted` ones), recursively, following links to files and folders (each
    folder visited once)."""
    audio, ignored, skipped, visited = set(), 0, [], set()

    def unreadable(err: OSError) -> None:
        skipped.append(f"{err.filename}: cannot be read ({err.strerror})")

    for root, folders, names in os.walk(folder, onerror=unreadable, followlinks=True):
        info = os.stat(root)
        if (info.st_dev, info.st_ino) in visited:  # a link back into a folder already listed
            skipped.append(f"{root}: a link to a folder already listed (a loop?)")
            folders.clear()
            continue
        visited.add((info.st_dev, info.st_ino))
        for name in names:
            path = Path(root, name)
            if not wanted(path):
                ignored += 1
                continue
            try:
                real = path.resolve(strict=True)
            except FileNotFoundError:
                skipped.append(f"{path}: a broken link")
                continue
            except (OSError, RuntimeError) as err:  # links that lead back to themselves
                skipped.append(f"{path}: cannot be read ({getattr(err, 'strerror', None) or 'a loop of links'})")
                continue
            if real.is_file():
                audio.add(real)
            else:
                skipped.append(f"{path}: not a regular file (a pipe, device or socket)")
    return Listing(sorted(audio), ignored, skipped)


def warn_skipped(skipped: list[str], shown: int = 10) -> None:
    """What a folder listing could not look at, on stderr: a few lines, then a count."""
    for problem in skipped[:shown]:
        print(f"warning: skipped {problem}", file=sys.stderr)
    if len(skipped) > shown:
        print(f"warning: skipped {len(skipped) - shown} more entries that cannot be read", file=sys.stderr)


def check_writable(path: Path) -> None:
    """Fail now, before any work, if `path` cannot be written: a missing folder, a folder, no permission."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as err:
        raise UserError(f"{path}: cannot be written ({err.strerror})") from None
    if not existed:
        path.unlink()


class ResultTable:
    """Rows of a folder job in .csv or .jsonl, one per file, matched by `key` (the file's resolved path).

    A rerun with the same output does only what is left: rows without an `error` are done; failed files are tried
    again. Each row is written with one write() call, and on reading only whole rows count, so a run killed
    mid-row loses nothing but that row, which the next run redoes. Rows of files outside this run's folder stay.

    A file that is not a table of this job (other columns, a line that is not one of its rows) is refused, never
    rewritten: only a row cut off at the very end is dropped. `same`: columns every row holds with one value (the
    checkpoint's SHA-256): rows of another value (another model) are refused too. While a run writes the table it
    holds a lock (`<table>.lock` beside it), so that a second run on the same table is refused at once.
    """

    def __init__(self, path: Path, columns: list[str], key: str = "path", same: dict[str, str] | None = None):
        if path.suffix not in TABLE_FORMATS:
            raise UserError(f"{path}: a folder's results go to {' or '.join(TABLE_FORMATS)}")
        check_writable(path)
        self.same = dict(same or {})
        self.path, self.columns, self.key = path, [*columns, *(c for c in self.same if c not in columns)], key
        self._lock = FileLock(path.with_name(path.name + ".lock"), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(
                f"{path}: another run is writing this table; wait for it to end or choose another output"
            ) from None
        try:
            rows, damaged = self._read()
        except BaseException:
            self.close()
            raise
        if damaged:
            print(f"warning: {path}: {damaged} damaged row(s) dropped (a run cut off mid-row); their files are redone")
        self.done = {k for k, row in rows.items() if not row.get("error")}
        self.failed = set(rows) - self.done
        self._rewrite(rows.values())  # whole rows only, one per key

    def close(self) -> None:
        """Let another run write the table."""
        self._lock.release()

    def __enter__(self) -> "ResultTable":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def todo(self, keys: Iterable[str]) -> list[str]:
        """The keys still to do, in order; their failed rows are removed now, to be written anew."""
        todo = [k for k in keys if k not in self.done]
        retried = self.failed.intersection(todo)
        if retried:
            rows, _ = self._read()
            self._rewrite(row for k, row in rows.items() if k not in retried)
            self.failed -= retried
        return todo

    def rows(self) -> list[dict]:
        """The whole rows written so far, one per key."""
        return list(self._read()[0].values())

    def add(self, row: dict) -> None:
        self.add_rows([row])

    def add_rows(self, rows: list[dict]) -> None:
        """Rows of one file (e.g. its 3-s chunks) in one write, so that a cut-off run never leaves half a file."""
        rows = [{**row, **self.same} for row in rows]
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = self._encode(rows)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        for row in rows:
            (self.failed if row.get("error") else self.done).add(row[self.key])

    def _encode(self, rows: Iterable[dict], header: bool = False) -> bytes:
        if self.path.suffix == ".jsonl":
            return "".join(json.dumps({c: row.get(c, "") for c in self.columns}) + "\n" for row in rows).encode()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if header:
            writer.writerow(self.columns)
        # lists and dicts (a timeline of segments) go into a CSV cell as JSON
        writer.writerows([_cell(row.get(c, "")) for c in self.columns] for row in rows)
        return text.getvalue().encode()

    def _read(self) -> tuple[dict[str, dict], int]:
        """Whole rows by key (the last one wins) and how many damaged ones were dropped: only a last row cut off
        mid-write; a file holding anything else is not this job's table, and is refused."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return {}, 0
        text = self.path.read_bytes().decode(errors="replace")
        cut = not text.endswith("\n")  # the last row was cut off mid-write
        if self.path.suffix == ".jsonl":
            lines = text.splitlines()
            start = json.dumps({self.columns[0]: ""})[:-3]  # how every row begins: {"path": "
            if cut and not lines[-1].startswith(start):
                self._refuse(f"its last line is not a row of {self.kind}")
            lines = lines[:-1] if cut else lines
            rows = []
            for number, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict) or list(row) != self.columns or not row.get(self.key):
                    self._refuse(f"line {number} is not a row of {self.kind}")
                rows.append(row)
        else:
            records = list(csv.reader(io.StringIO(text)))
            if not records or records[0] != self.columns:
                self._refuse(f"has other columns than {self.kind}")
            key = self.columns.index(self.key)
            for number, record in enumerate(records[1 : -1 if cut else None], 2):
                if len(record) != len(self.columns) or not record[key]:
                    self._refuse(f"row {number} is not a row of {self.kind}")
            rows = [dict(zip(self.columns, r)) for r in records[1 : -1 if cut else None]]
        for row in rows:
            for column, value in self.same.items():
                if row[column] != value:
                    self._refuse(f"holds rows made with another model ({column} {str(row[column])[:12]}...)")
        return {row[self.key]: row for row in rows}, int(cut)

    @property
    def kind(self) -> str:
        return "this job's table" + (" (model " + next(iter(self.same.values()))[:12] + "...)" if self.same else "")

    def _refuse(self, why: str) -> None:
        raise UserError(f"{self.path}: {why}; it is left as it is: choose a new output file")

    def _rewrite(self, rows: Iterable[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(self._encode(rows, header=True))
        tmp.replace(self.path)


def _cell(value: object) -> object:
    return json.dumps(value) if isinstance(value, list | dict) else value

"""A study's figures as a Markdown page: the command that made them, its tables, and everything it printed."""

import contextlib
import io
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


class Results:
    """Within `with Results(output, "name") as results:` what the study prints still goes to the terminal and is also
    kept; `results.table(caption, header, rows)` adds a Markdown table. On leaving, with `output` given, the page is
    written there (e.g. docs/results/<name>.md)."""

    def __init__(self, output: str | None, study: str):
        self.output, self.study = Path(output) if output else None, study
        self.tables: list[str] = []
        self._printed = io.StringIO()
        self._redirect = contextlib.redirect_stdout(_Tee(sys.stdout, self._printed))

    def table(self, caption: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        self.tables.append(f"{caption}\n\n{markdown_table(header, rows)}")

    def __enter__(self) -> "Results":
        if self.output:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if not self.output:
            return
        self._redirect.__exit__(*exc)
        if exc[0] is not None:  # a failed run leaves the page as it was
            return
        command = shlex.join(["python", "-m", f"studies.{self.study}", *sys.argv[1:]])
        parts = [f"# {self.study}", f"Made by `{command}`.", *self.tables]
        parts.append("What it printed:\n\n```text\n" + self.printed().rstrip("\n") + "\n```")
        self.output.write_text("\n\n".join(parts) + "\n")
        print(f"written to {self.output}")

    def printed(self) -> str:
        return self._printed.getvalue()

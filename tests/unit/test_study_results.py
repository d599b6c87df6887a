"""A study's --output page: the command that made it, its tables as Markdown, and what it printed."""

import sys

import pytest

from studies.results import Results, markdown_table


def test_a_study_page_holds_its_tables_and_what_it_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["architecture_speed.py", "--output", "speed.md"])
    page = tmp_path / "results" / "speed.md"
    with Results(str(page), "architecture_speed") as results:
        print("model  ms per clip")
        results.table("Speed:", ["model", "ms per clip"], [["`model=cnn`", "1.5"]])
    assert "model  ms per clip" in capsys.readouterr().out  # still on the terminal
    text = page.read_text()
    assert "Made by `python -m studies.architecture_speed --output speed.md`." in text
    assert "Speed:\n\n| model | ms per clip |\n|---|---|\n| `model=cnn` | 1.5 |" in text
    assert "```text\nmodel  ms per clip\n```" in text


def test_a_failed_study_leaves_the_page_as_it_was(tmp_path):
    page = tmp_path / "speed.md"
    page.write_text("before")
    with pytest.raises(RuntimeError), Results(str(page), "architecture_speed"):
        print("half")
        raise RuntimeError("broken")
    assert page.read_text() == "before"


def test_without_output_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Results(None, "neighbours") as results:
        results.table("t", ["a"], [[1]])
    assert list(tmp_path.iterdir()) == []
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"

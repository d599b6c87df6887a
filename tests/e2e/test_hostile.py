"""The hostile-input contract (tests/helpers/hostile.py) held for every entry point, and folder runs killed and resumed.

An entry point is a runner: (trained model, folder, cases) -> {file name: Outcome}. Adding one (`serve`, `features`)
is writing its runner and one line in RUNNERS.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from helpers.audio import CLIP_S, SR, tone, write_gtzan
from helpers.hostile import Hostile, Outcome, check, tiny_checkpoint, write_hostile, write_hostile_checkpoints
from helpers.processes import REPO, bot_process, run_cli, run_in_process, without_rights

from music_genre_classification.config import UserError
from music_genre_classification.data.audio import MIN_DURATION_S, AudioError
from music_genre_classification.data.folder import audio_files, check_writable
from music_genre_classification.models.classifier import GenreClassifier

DECODER_CHATTER = re.compile(r"^(Note: |Warning: |\[src/libmpg123)", re.M)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, list[Hostile]]:
    folder = tmp_path_factory.mktemp("hostile") / "library"
    return folder, write_hostile(folder)


def python_api(trained: dict, folder: Path, cases: list[Hostile]) -> dict[str, Outcome]:
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")
    outcomes = {}
    for case in cases:
        try:
            p = classifier.predict(folder / case.name)
            outcomes[case.name] = Outcome("genre", p.genre, p.duration_s, p.warning or "", not_music=p.not_music or "")
        except AudioError as err:
            outcomes[case.name] = Outcome("error", message=str(err).replace(str(folder / case.name), "FILE"))
    return outcomes


def infer_folder(trained: dict, folder: Path, cases: list[Hostile], suffix: str) -> dict[str, Outcome]:
    out = folder.parent / f"labels{suffix}"
    result = run_cli("infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(folder),
                     "--output_path", str(out), "--segments", cwd=folder.parent)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]  # some files failed, and the exit code says so
    assert "Traceback" not in result.stderr and not DECODER_CHATTER.search(result.stderr), result.stderr[-3000:]
    if suffix == ".csv":
        rows = list(csv.DictReader(open(out, newline="")))
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["path"] for r in rows}) == len(rows), "one row per file"
    by_path = {r["path"]: r for r in rows}
    skipped = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped ")]
    assert any("sub/up" in line for line in skipped), skipped  # the folder linking back up is named
    outcomes = {}
    for case in cases:
        row = by_path.get(os.path.realpath(folder / case.name))
        if row is None:
            named = any(str(folder / case.name) in line for line in skipped)
            outcomes[case.name] = Outcome("skipped" if named else "missing")
        elif row["error"]:
            outcomes[case.name] = Outcome("error", message=row["error"].replace(str(folder / case.name), "FILE"))
        else:
            segments = json.loads(row["segments"]) if suffix == ".csv" else row["segments"]
            duration = float(row["duration_s"])
            assert segments[0]["start_s"] == 0 and abs(segments[-1]["end_s"] - duration) < 0.01, row
            assert all(s["end_s"] - s["start_s"] >= MIN_DURATION_S for s in segments), row  # no sliver of its own
            outcomes[case.name] = Outcome("genre", row["genre"], duration, row["warning"])
    return outcomes


SINGLE_FILES = ("cut.mp3", "random.mp3", "image.mp3", "broken_link.wav", "new\nline.wav")


def infer_file(trained: dict, folder: Path, cases: list[Hostile]) -> dict[str, Outcome]:
    """`infer` on one file at a time (a few kinds): the cut MP3 in a process of its own, which checks what the console
    shows there (the decoder's notes dropped, one line); the others through the same main() in this process."""
    outcomes = {}
    for case in [c for c in cases if c.name in SINGLE_FILES]:
        run = run_cli if case.name == "cut.mp3" else run_in_process
        result = run("infer", "--model_path", str(trained["checkpoint"]), "--audio_path", case.name, cwd=folder)
        lines = result.stderr.strip().splitlines()
        if result.returncode:
            assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
            outcomes[case.name] = Outcome("error", message=lines[0])
        else:
            said = re.match(
                r"genre: (not sure: does not sound like music \((.+?)\)|\w+)\s+\(([\d.]+) s\)", result.stdout
            )
            assert said, result.stdout
            word, not_music, seconds = said.groups()
            genre = re.search(r"^closest genre: (\w+)$", result.stdout, re.M).group(1) if not_music else word
            warnings = [line for line in lines if line.startswith("warning: ")]
            assert len(warnings) == len(lines) <= 2, result.stderr
            notes = "".join(line for line in warnings if "does not sound like music" not in line)
            outcomes[case.name] = Outcome("genre", genre, float(seconds) - 0.05, notes, not_music=not_music or "")
    return outcomes


def bot(trained: dict, folder: Path, cases: list[Hostile]) -> dict[str, Outcome]:
    """Each file sent to the bot as a document by a user of its own; the reply read back."""
    files = [c for c in cases if (folder / c.name).is_file() and not (folder / c.name).is_symlink()]
    tmp = folder.parent / "bot_tmp"
    tmp.mkdir(exist_ok=True)
    outcomes = {}
    with bot_process(trained["checkpoint"], tmp) as api:
        chats = {}
        for i, case in enumerate(files):
            file = api.add_file((folder / case.name).read_bytes(), f"documents/hostile_{i}")
            chats[case.name] = 1000 + i
            api.send((1000 + i, {"document": {**file, "file_name": case.name, "mime_type": "audio/mpeg"}}))
        for case in files:
            reply = api.replies(chats[case.name], timeout=120)[0]
            assert "/tmp" not in reply and str(folder) not in reply and "went wrong" not in reply, reply
            if reply.startswith("I cannot classify"):
                outcomes[case.name] = Outcome("error", message=reply)
            else:
                genre, minutes, seconds = re.match(r"<b>(\w+|Not sure)</b> \((\d+):(\d\d)\)", reply).groups()
                warning = reply.split("⚠ ", 1)[1] if "⚠ " in reply else ""
                not_music = ""
                if genre == "Not sure":  # no genre in bold: the reason, and the closest genre in words
                    not_music = re.search(r"does not sound like music \((.+?)\)\.", reply).group(1)
                    genre = re.search(r"The closest genre would be (\w+)\.", reply).group(1)
                duration = 60 * int(minutes) + int(seconds) - 0.5
                outcomes[case.name] = Outcome("genre", genre, duration, warning, not_music=not_music)
    assert list(tmp.iterdir()) == []  # no temporary file left behind, whatever came in
    return outcomes


def features(trained: dict, folder: Path, cases: list[Hostile]) -> dict[str, Outcome]:
    """The `features` command on the folder: a row (judged as a "genre": the table has none) or one error line."""
    out = folder.parent / "features.csv"
    result = run_cli("features", "--audio_path", str(folder), "--output_path", str(out), cwd=folder.parent)
    assert result.returncode == 1, result.stderr[-3000:]  # some files failed, and the exit code says so
    assert "Traceback" not in result.stderr and not DECODER_CHATTER.search(result.stderr), result.stderr[-3000:]
    rows = list(csv.DictReader(open(out, newline="")))
    assert len({r["filename"] for r in rows}) == len(rows), "one row per file"
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error: ", "warning: "))]
    outcomes = {}
    for case in cases:
        path, name = str(folder / case.name), Path(case.name).name
        said = [line for line in lines if path in line or os.path.realpath(path) in line]
        row = next((r for r in rows if r["filename"] == name), None)
        if case.says == "noise":  # noise is audio: its features are well defined (a model refuses to judge it)
            assert row is not None, case
        elif row is not None:
            warning = "".join(line for line in said if line.startswith("warning: "))
            outcomes[case.name] = Outcome("genre", None, int(row["length"]) / SR, warning)
        elif any(line.startswith("warning: skipped") for line in said):
            outcomes[case.name] = Outcome("skipped")
        elif said:
            assert len(said) == 1, said
            outcomes[case.name] = Outcome("error", message=said[0].replace(path, "FILE"))
    return outcomes


def serve(trained: dict, folder: Path, cases: list[Hostile]) -> dict[str, Outcome]:
    """Each regular file uploaded to the real `serve` command: 200 with a genre, or 400/415 with one JSON error."""
    import httpx
    from helpers.processes import Server

    server = Server(folder.parent / "serve", "--model_path", str(trained["checkpoint"]))
    outcomes = {}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for case in [c for c in cases if (folder / c.name).is_file() and not (folder / c.name).is_symlink()]:
                with open(folder / case.name, "rb") as f:
                    answer = client.post("/predict", files={"file": (Path(case.name).name, f)})
                body = answer.json()
                if answer.status_code == 200:
                    warning = body.get("warning", "")
                    not_music = body.get("not_music") or ""
                    outcomes[case.name] = Outcome(
                        "genre", body["genre"], body["duration_s"], warning, not_music=not_music
                    )
                else:
                    assert answer.status_code in (400, 413, 415), (case.name, answer.status_code, body)
                    outcomes[case.name] = Outcome("error", message=body["error"])
        assert server.uploads() == []  # temporary files removed, whatever came in
    finally:
        server.stop()
    return outcomes


RUNNERS = {
    "python": python_api,
    "infer folder csv": lambda trained, folder, cases: infer_folder(trained, folder, cases, ".csv"),
    "infer folder jsonl": lambda trained, folder, cases: infer_folder(trained, folder, cases, ".jsonl"),
    "infer file": infer_file,
    "bot": bot,
    "features": features,
    "serve": serve,
}


@pytest.mark.parametrize("entry_point", RUNNERS)
def test_hostile_files_get_a_genre_a_warning_or_one_line_error(trained, hostile, entry_point):
    folder, cases = hostile
    outcomes = RUNNERS[entry_point](trained, folder, cases)
    assert outcomes, "the runner looked at no file"
    for case in cases:
        if case.name in outcomes:
            check(case, outcomes[case.name], entry_point)
        if case.name.startswith("new\n") and case.name in outcomes:
            assert outcomes[case.name].kind == "genre"  # a newline in a name is no reason to fail


def test_test_command_skips_hostile_clips_with_one_warning(trained, hostile, tmp_path):
    folder, cases = hostile
    root = write_gtzan(tmp_path / "data", clips_per_genre=2)
    regular = [c for c in cases if (folder / c.name).is_file() and not (folder / c.name).is_symlink()]
    for case in regular:
        (root / "mid" / case.name).write_bytes((folder / case.name).read_bytes())
    result = run_cli("test", str(trained["checkpoint"]), f"datamodule.root={root}", "split=all", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not DECODER_CHATTER.search(result.stderr + result.stdout)
    bad, unsure = ([c for c in regular if c.expect == kind] for kind in ("error", "any"))
    skipped = re.search(r"skipped (\d+) unreadable clip\(s\): (.*)", result.stdout)
    assert len(bad) <= int(skipped[1]) <= len(bad) + len(unsure)
    assert all(f"{c.name} (" in skipped[2] for c in bad if "\n" not in c.name)
    clips = int(re.search(r"clips (\d+) ", result.stdout)[1])
    assert clips == 6 + len(regular) - int(skipped[1])  # 6: two good clips per genre


def test_bad_python_waveforms_are_refused_or_read_right(trained):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")
    wave = tone("low", 3, sr=44100)
    with pytest.raises(AudioError, match="sample rate"):  # no guessing 22050 Hz
        classifier.predict(wave)
    channels_first = classifier.predict(wave[None].repeat(2, 0), sample_rate=44100)  # [channels, samples]
    assert channels_first.genre == "low" and abs(channels_first.duration_s - CLIP_S) < 0.01
    as_int16 = classifier.predict((wave * 32767).astype("int16"), sample_rate=44100)
    assert as_int16.genre == "low"
    for bad, words in [(wave[None, None], "shape"), (wave.astype(str), "numbers"), (wave[:100], "too short")]:
        with pytest.raises(AudioError, match=words):
            classifier.predict(bad, sample_rate=44100)


# --- resumption: kill, damage, resume -------------------------------------------------------------------------------


def write_library(folder: Path, count: int, seconds: float = CLIP_S) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"clip{i:03d}.wav" for i in range(count)]
    for i, path in enumerate(paths):
        sf.write(path, tone(["low", "mid", "high"][i % 3], 300 + i, seconds), SR)
    return paths


def infer_args(trained: dict, audio: str | Path, out: str | Path) -> list[str]:
    return ["infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(audio), "--output_path", str(out)]


def read_rows(out: Path) -> list[dict]:
    if out.suffix == ".csv":
        return list(csv.DictReader(open(out, newline="")))
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_folder_run_killed_mid_run_resumes_without_losing_or_repeating_a_row(trained, tmp_path, suffix):
    paths = write_library(tmp_path / "library", 60)
    out = tmp_path / f"labels{suffix}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "music_genre_classification.commands", *infer_args(trained, "library", out)]
    process = subprocess.Popen(command + ["--batch_size", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if out.is_file() and out.read_bytes().count(b"\n") >= 4:  # (a header and) a few rows written
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # no chance to clean up
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = read_rows(out)
    assert 0 < len(done) < len(paths)
    with open(out, "ab") as f:  # as if killed in the middle of writing the next row
        f.write(b"/x/half a row," if suffix == ".csv" else b'{"path": "/x/half a row", "gen')

    resumed = run_cli(*infer_args(trained, tmp_path / "library", out), cwd=tmp_path)  # absolute this time
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert "1 damaged row(s) dropped" in resumed.stdout
    assert f"{len(paths) - len(done)} audio files to label" in resumed.stdout
    assert f"{len(done)} already done" in resumed.stdout  # relative then absolute: the same files
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p.resolve()) for p in paths)
    assert all(r["genre"] and not r["error"] for r in rows)
    assert {r["path"]: r for r in rows}.keys() >= {r["path"] for r in done}


def test_one_output_for_two_folders_keeps_both_folders_rows(trained, tmp_path):
    first, second = write_library(tmp_path / "a", 2), write_library(tmp_path / "b", 1)
    (tmp_path / "a" / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 500)
    out = tmp_path / "labels.csv"
    assert run_cli(*infer_args(trained, tmp_path / "a", out), cwd=tmp_path).returncode == 1
    assert run_cli(*infer_args(trained, tmp_path / "b", out), cwd=tmp_path).returncode == 0
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert set(rows) == {p.name for p in first + second} | {"broken.mp3"}  # the old failure is still recorded
    assert rows["broken.mp3"]["error"] and len(read_rows(out)) == 4


def test_unreadable_files_folders_and_outputs_are_named(trained):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")
    classifier.predict(tone("low", 1), sample_rate=SR)  # everything imported before the rights go
    with without_rights() as folder:
        write_library(folder / "music", 2)
        (folder / "music" / "locked").mkdir()
        (folder / "music" / "locked").chmod(0)
        (folder / "music" / "clip001.wav").chmod(0)
        (folder / "readonly").mkdir(mode=0o555)
        listing = audio_files(folder / "music")
        assert [p.name for p in listing.audio] == ["clip000.wav", "clip001.wav"]
        assert [s for s in listing.skipped if "locked: cannot be read (Permission denied)" in s], listing.skipped
        with pytest.raises(AudioError, match=r"clip001.wav: cannot be read \(Permission denied\)"):
            classifier.predict(folder / "music" / "clip001.wav")
        with pytest.raises(UserError, match=r"cannot be written \(Permission denied\)"):
            check_writable(folder / "readonly" / "labels.csv")


# --- checkpoints: loading one never runs code -------------------------------------------------------------------------

SECRET = "s3cr3t-value"


def test_crafted_checkpoints_are_refused_in_one_line_without_running_code(tmp_path, monkeypatch):
    import torch

    names, marker = write_hostile_checkpoints(tmp_path / "ckpts")
    good = tmp_path / "good.ckpt"
    torch.save(tiny_checkpoint(), good)
    GenreClassifier.from_checkpoint(good, device="cpu")  # the checkpoint they were made from loads
    monkeypatch.setenv("MGC_SECRET", SECRET)
    for name in names:
        with pytest.raises(UserError) as refused:
            GenreClassifier.from_checkpoint(tmp_path / "ckpts" / name, device="cpu")
        message = str(refused.value)
        assert "\n" not in message and SECRET not in message, (name, message)
        assert not marker.exists(), f"{name} ran code"
    sf.write(tmp_path / "clip.wav", tone("low", 1), SR)
    for name in ("pickle.ckpt", "target_print.ckpt", "nested_target.ckpt", "args.ckpt", "resolver.ckpt"):
        run = run_cli if name == "pickle.ckpt" else run_in_process  # one in a process of its own: the entry point
        result = run("infer", "--model_path", f"ckpts/{name}", "--audio_path", "clip.wav", cwd=tmp_path,
                     env={"MGC_SECRET": SECRET})  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert SECRET not in result.stderr and not result.stdout and "ran" not in result.stdout, name
        assert not marker.exists(), f"{name} ran code"
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == sorted(names)  # nothing written beside them


# --- precomputed spectrograms (.npy): held to the rules audio is ------------------------------------------------------


def test_bad_spectrograms_are_refused_in_one_line_and_a_huge_one_is_never_loaded(tmp_path):
    import tracemalloc

    import numpy as np
    import torch

    torch.save(tiny_checkpoint(), tmp_path / "tiny.ckpt")
    classifier = GenreClassifier.from_checkpoint(tmp_path / "tiny.ckpt", device="cpu")
    columns = classifier.front_end.params.window_columns  # one 30-s window
    rng = np.random.default_rng(0)
    with torch.no_grad():  # a tune's log-mel, as stored spectrograms are made (random values would be noise)
        good = classifier.front_end(torch.from_numpy(tone("mid", 0, seconds=30))).numpy().astype(np.float16)
    assert good.shape == (128, columns)
    cases = {
        "zeros": (np.zeros((128, columns), np.float32), "flat spectrogram"),
        "three_columns": (good[:, :3], "too short"),
        "huge_values": (np.full((128, columns), 1e30, np.float32), "out of range"),
        "bytes_0_255": (rng.integers(0, 256, (128, columns)).astype(np.uint8), "uint8 values"),
        "nan": (np.where(good > 0.5, np.nan, good), "NaN"),
        "wrong_bands": (good[:64], "not a spectrogram of 128 mel bands"),
        "three_dims": (good[None], "not a spectrogram of 128 mel bands"),
    }
    for name, (array, words) in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        with pytest.raises(AudioError, match=words):
            classifier.predict(tmp_path / f"{name}.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AudioError, match="not a readable spectrogram"):
        classifier.predict(tmp_path / "objects.npy")
    huge = np.lib.format.open_memmap(tmp_path / "huge.npy", "w+", np.float32, (128, 200_000))  # 102 MB
    del huge
    tracemalloc.start()
    with pytest.raises(AudioError, match="more than one 30-s window"):
        classifier.predict(tmp_path / "huge.npy")
    assert tracemalloc.get_traced_memory()[1] < 10e6  # refused from its header
    tracemalloc.stop()
    np.save(tmp_path / "good.npy", good)
    assert classifier.predict(tmp_path / "good.npy").duration_s == pytest.approx(30, abs=0.1)
    result = run_cli("infer", "--model_path", "tiny.ckpt", "--audio_path", "zeros.npy", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: zeros.npy: a flat spectrogram (silent, or no signal)"
    ]


# --- result tables never mix: not a table of this job, another model, two runs at once --------------------------------


def test_tables_of_another_kind_or_model_are_refused_untouched_and_a_table_in_use_is_locked(tmp_path, capsys):
    import torch

    from music_genre_classification.data.features import TABLE_COLUMNS
    from music_genre_classification.data.fetch import file_sha256
    from music_genre_classification.data.folder import ResultTable
    from music_genre_classification.serving.batch import FolderRows
    from music_genre_classification.serving.inference import run_infer

    write_library(tmp_path / "library", 2)
    first, other = tmp_path / "first.ckpt", tmp_path / "other.ckpt"
    torch.save(tiny_checkpoint(), first)
    torch.save(tiny_checkpoint() | {"val_metrics": {"note": "another model"}}, other)
    out = tmp_path / "labels.jsonl"
    assert not run_infer(str(first), str(tmp_path / "library"), str(out))
    rows = read_rows(out)
    assert len(rows) == 2 and {r["model_sha256"] for r in rows} == {file_sha256(first)}  # which model made each row
    made = out.read_bytes()

    def refused(model: Path, output: Path, words: str) -> None:
        before = output.read_bytes()
        with pytest.raises(UserError, match=words):
            run_infer(str(model), str(tmp_path / "library"), str(output))
        assert output.read_bytes() == before, "a table that is not this job's is left as it was"

    refused(other, out, "rows made with another model")
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"todo": "call the band"}\nnot json at all\n')
    refused(first, notes, "line 1 is not a row")
    notes.write_text("my notes, no newline at the end")
    refused(first, notes, "its last line is not a row")
    with pytest.raises(UserError, match="line 1 is not a row"):  # `features` into `infer`'s table
        ResultTable(out, TABLE_COLUMNS, key="filename")
    assert out.read_bytes() == made
    assert run_infer(str(first), str(tmp_path / "library"), str(out)) is False  # the same model resumes
    assert "0 audio files to label" in capsys.readouterr().out

    columns = FolderRows(("low", "mid", "high")).columns()
    with ResultTable(out, columns, same={"model_sha256": file_sha256(first)}):  # a run writing the table
        result = run_cli(*infer_args({"checkpoint": first}, "library", out), cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip().splitlines() == [
            f"error: {out}: another run is writing this table; wait for it to end or choose another output"
        ]
        assert not result.stdout
    assert out.read_bytes() == made


# --- the Python API: what it is given, and one bad file among many ----------------------------------------------------


def test_python_api_says_what_it_reads_and_one_bad_path_never_ends_predict_many(tmp_path):
    import io

    import numpy as np
    import torch
    from helpers.audio import encode

    from music_genre_classification.data.audio import audio_signature

    torch.save(tiny_checkpoint(), tmp_path / "tiny.ckpt")
    classifier = GenreClassifier.from_checkpoint(tmp_path / "tiny.ckpt", device="cpu")
    clip = write_library(tmp_path / "library", 2)
    for source in (clip[0].read_bytes(), open(clip[0], "rb"), io.BytesIO(clip[0].read_bytes())):
        with pytest.raises(AudioError, match="give a path or an array"):
            classifier.predict(source)
    with pytest.raises(AudioError, match="cannot hold a NUL character"):
        classifier.predict(str(tmp_path / "a\0b.wav"))
    results = list(classifier.predict_many([clip[0], str(tmp_path / "a\0b.wav"), 42, clip[1]], batch_size=1))
    assert [bool(prediction) for _, prediction, _ in results] == [True, False, False, True]
    assert "NUL" in results[1][2] and "not a path" in results[2][2]

    # random bytes named like audio are refused by their first bytes, before any decoder starts
    (tmp_path / "random.mp3").write_bytes(np.random.default_rng(3).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="its first bytes are those of no audio format"):
        classifier.predict(tmp_path / "random.mp3")
    wave = tone("low", 1, 2)
    for fmt, subtype in [("WAV", None), ("FLAC", None), ("OGG", None), ("MP3", None), ("AIFF", None), ("AU", None)]:
        assert audio_signature(encode(wave, fmt, subtype)[:64]), fmt
    rng = np.random.default_rng(4)
    flagged = sum(audio_signature(rng.integers(0, 256, 64, dtype=np.uint8).tobytes()) for _ in range(1000))
    assert flagged <= 5  # a random file rarely looks like audio

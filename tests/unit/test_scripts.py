"""The console scripts beside `music-genre`: `train`, `infer`, `serve`... each its own program (`poetry run train`)."""

import os
import subprocess
import sys
import tomllib
from importlib import metadata

from helpers.processes import REPO

COMMANDS = {"train", "test", "infer", "serve", "bot", "embed", "similar", "map", "tune", "ensemble", "calibrate"}
COMMANDS |= {"features"}


def declared() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_main_command_is_a_console_script_that_resolves_to_a_callable():
    scripts = declared()
    assert set(scripts) == COMMANDS | {"music-genre"}
    for name, value in scripts.items():
        assert callable(metadata.EntryPoint(name, value, "console_scripts").load()), name
    installed = {
        ep.name: ep.value
        for ep in metadata.entry_points(group="console_scripts")
        if ep.dist is not None and ep.dist.name.replace("_", "-") == "music-genre-classification"
    }
    assert installed == scripts, "the environment's scripts are not pyproject.toml's: pip install -e . again"


def test_a_console_script_runs_its_command(tmp_path):
    """What the `infer` script runs: its usage, then the command's one-line error for a missing checkpoint."""
    value = declared()["infer"]
    call = f"from importlib.metadata import EntryPoint; EntryPoint('infer', {value!r}, 'console_scripts').load()()"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAGER": "cat"}

    def script(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", f"import sys; sys.argv[0] = 'infer'; {call}", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    usage = script("--help")
    shown = usage.stdout + usage.stderr  # Fire writes its help to stderr when that is not a terminal
    assert usage.returncode == 0 and "infer MODEL_PATH AUDIO_PATH" in shown, shown
    missing = script("none.ckpt", "a.wav")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")

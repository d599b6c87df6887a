"""The pip route installs what the lock says: constraints.txt is poetry.lock, exported."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^ ;]+)", line).groups()
            pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_are_the_lock():
    lock = tomllib.loads((REPO / "poetry.lock").read_text())
    locked = {_canonical(p["name"]): p["version"] for p in lock["package"]}
    assert _constraints() == locked, "constraints.txt differs from poetry.lock: export it again (CONTRIBUTING.md)"


def test_torch_and_torchaudio_are_pinned_as_a_pair():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {_canonical(d.split("==")[0]): d.split("==")[1] for d in project["dependencies"] if "==" in d}
    assert pins["torch"] == pins["torchaudio"], "torchaudio is built for exactly one torch release"
    assert _constraints()["torch"] == pins["torch"]


def test_installed_torch_pair_is_the_locked_one():
    pins = _constraints()
    assert metadata.version("torch").split("+")[0] == pins["torch"]
    assert metadata.version("torchaudio").split("+")[0] == pins["torchaudio"]

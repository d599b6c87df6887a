"""Composing Hydra configs from configs/, and the one-line errors every command shares."""

import atexit
import os
import re
import sys
import threading
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROJECT_ENV = "MGC_PROJECT_DIR"  # the folder whose data/, outputs/ and .cache/ every command uses


def project_dir() -> Path | None:
    """Where data/, outputs/ and .cache/ are, whatever the current directory: $MGC_PROJECT_DIR, else the checkout the
    package is installed from (editable); None for a package installed without its checkout."""
    if os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).resolve()
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").is_file() and CONFIG_DIR.is_dir() else None


def project_path(relative: str) -> str:
    """`${project:outputs}` in the configs: that path in the project folder (relative to the current directory only
    when there is no project folder)."""
    base = project_dir()
    return str(base / relative) if base else relative


def latest_model() -> str:
    """The model the latest `train` pointed outputs/model_full.ckpt to: `serve` and `bot` without --model_path."""
    return str(Path(project_path("outputs")) / "model_full.ckpt")


def artifact_location(tracking_uri: str, output_dir: str | Path) -> str | None:
    """Where a local MLflow store (sqlite, a folder) keeps runs' files: <output_dir>/mlruns, never the current
    directory; None for a tracking server, which keeps them itself."""
    if str(tracking_uri).startswith(("http:", "https:", "databricks")):
        return None
    return (Path(output_dir).resolve() / "mlruns").as_uri()


def make_sqlite_folder(url: str) -> None:
    """The folder of a sqlite store (sqlite:///<path>), which sqlite does not create itself."""
    if str(url).startswith("sqlite:///") and not str(url).endswith(":memory:"):
        Path(str(url).removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("project"):
        OmegaConf.register_new_resolver("project", project_path)


_register_resolvers()


class UserError(Exception):
    """Bad input from the user (config, paths, files): shown as one line, exit code 1, no traceback."""


def compose(name: str, overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The config `name` with Hydra overrides; hydra_config: with Hydra's own node (hydra.runtime.choices...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=name, overrides=overrides, return_hydra_config=hydra_config)
    except (HydraException, OmegaConfBaseException) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise UserError(f"bad config override: {' '.join(lines[:2])}") from None  # line 2 holds Hydra's hint
    except ValueError as err:  # Hydra's own, e.g. a group set to null (logger=null)
        hint = "; to turn a config group off, delete it: ~logger" if "NoneType" in str(err) else ""
        raise UserError(f"bad config override: {err}{hint}") from None


def build(cfg: DictConfig, **kwargs):
    """hydra.utils.instantiate with a one-line error for a bad override."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__:  # nested configs: the innermost error
            cause = cause.__cause__
        raise UserError(f"cannot build {cfg.get('_target_', 'object')}: {first_line(cause)}") from None


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# libmpg123 (inside libsndfile, see data/audio.py) prints notes about damaged MP3 frames straight to file descriptor 2,
# and libsndfile its own internal failures on a damaged file, which the file's warning or error already says
DECODER_NOTES = re.compile(rb"^(Note: |Warning: |\[src/libmpg123/|Internal psf_\w+\(\) failed)")


def drop_decoder_notes() -> None:
    """From now on, lines that the MP3 decoder prints to file descriptor 2 are dropped; all else still shows.

    Python's sys.stderr moves to a copy of the terminal's descriptor; descriptor 2 becomes a pipe whose lines a
    thread passes on, less the decoder's, so that a damaged MP3 gets the one `error:` line and nothing more.
    """
    terminal = os.dup(2)
    sys.stderr.flush()
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(terminal, "w", buffering=1, encoding=encoding, errors="backslashreplace")  # noqa: SIM115
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with open(read_end, "rb") as pipe:
            for line in pipe:
                if not DECODER_NOTES.match(line):
                    os.write(terminal, line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()

    def close() -> None:  # at exit: the pipe is closed, and what is still in it reaches the terminal
        os.dup2(terminal, 2)
        thread.join(timeout=2)

    atexit.register(close)

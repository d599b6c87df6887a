"""Composing Hydra configs from configs/ and the one-line errors every command shares."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class UserError(Exception):
    """Bad input from the user (config, paths, files): shown as one line, exit code 1, no traceback."""


def compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise UserError(f"bad config override: {' '.join(lines[:2])}") from None  # line 2 holds Hydra's hint


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

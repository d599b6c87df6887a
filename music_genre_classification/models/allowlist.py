"""What a checkpoint may name and hold: this project's own networks, built from plain settings. Never code.

People share checkpoints, so a checkpoint is data: loading one must not import, call or resolve anything it names.
Its network is named by `_target_` (the Hydra path training wrote, kept so older checkpoints load) and looked up in
NETWORKS, this project's classes; nothing from a checkpoint reaches `hydra.utils.instantiate` or an OmegaConf
resolver (`${oc.env:...}` is just a string here, and a string is no number). Each setting must be a keyword the
class takes, of the plain type its annotation says (a number, a switch, a list of numbers); Hydra's own keys
(`_partial_`, `_args_`, `_recursive_`...), nested nodes and anything else are refused with a UserError. The network
is first built on the `meta` device (no memory) so that an absurd size is refused before anything is allocated.

Scikit-learn pipelines are stored with skops and read back only with trusted types (models/classical.py); the
file itself is read by torch.load with weights_only=True (tensors, numbers, strings, lists and dicts only).
"""

import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import fields

import torch
from torch import nn

from music_genre_classification.config import UserError
from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.models.architectures import GenreCNN1D, GenreCRNN, GenreLSTM, GenreResNet
from music_genre_classification.models.musicnn_classifier import GenreMusicnn
from music_genre_classification.models.networks import GenreCNN, MelBaseline

NETWORKS: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (GenreCNN, MelBaseline, GenreCNN1D, GenreCRNN, GenreLSTM, GenreResNet, GenreMusicnn)
}
MAX_NETWORK_VALUES = 200_000_000  # parameters and buffers (800 MB as float32): far above any network of `model=`
MAX_GENRES = 1000
# what a spectrogram front end may be asked for: wide enough for any sensible setting, small enough that its FFT
# window and mel filters stay small
SPECTROGRAM_LIMITS = {
    "sample_rate": (1000, 384_000),
    "n_fft": (16, 65_536),
    "hop_length": (1, 65_536),
    "n_mels": (1, 1024),
    "top_db": (1.0, 1000.0),
    "window_s": (1.0, 3600.0),
    "window_columns": (1, 1_000_000),
}


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fits(value: object, annotation: object) -> bool:
    """`value` is a plain value of the type `annotation` names: int, float, bool, str, None, list[...] or a union."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple):
        (item, *_) = typing.get_args(annotation) or (object,)
        return isinstance(value, list | tuple) and len(value) <= 64 and all(fits(v, item) for v in value)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 10**9
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str) and len(value) <= 1000
    return False  # anything else (a dict, a class, an object) is never a setting a checkpoint may hold


def keyword_settings(settings: Mapping, signature: Mapping[str, object], what: str, given: tuple = ()) -> dict:
    """`settings` checked against `signature` (name -> annotation): every key one it takes, every value fitting."""
    if not isinstance(settings, Mapping):
        raise UserError(f"its {what} settings are not a table of names and values ({short(settings)})")
    checked = {}
    for key, value in settings.items():
        if key == "_target_":
            continue
        if not isinstance(key, str) or key.startswith("_") or key not in signature or key in given:
            raise UserError(f"{what} setting {short(key)} is not one it takes; refused")
        if not fits(value, signature[key]):
            raise UserError(f"{what} setting {key}={short(value)} is not a plain {_type_name(signature[key])}; refused")
        checked[key] = value
    return checked


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def network_class(config: object) -> type[nn.Module]:
    """The class a network config names, from NETWORKS only."""
    target = config.get("_target_") if isinstance(config, Mapping) else None
    if not isinstance(target, str) or target not in NETWORKS:
        raise UserError(f"names a network that is not one of this project's ({short(target)}); refused")
    return NETWORKS[target]


def build_network(config: Mapping, n_genres: int) -> nn.Module:
    """This project's network that `config` ({_target_: class path, setting: value...}) describes, for n_genres."""
    cls = network_class(config)
    parameters = inspect.signature(cls.__init__).parameters
    signature = {name: p.annotation for name, p in parameters.items() if name != "self"}
    settings = keyword_settings(config, signature, cls.__name__, given=("n_genres",))
    try:
        with torch.device("meta"):  # sizes first, with no memory behind them
            sketch = cls(n_genres=n_genres, **settings)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise UserError(f"{cls.__name__} cannot be built from its settings ({str(err).splitlines()[0]})") from None
    size = sum(t.numel() for t in (*sketch.parameters(), *sketch.buffers()))
    if size > MAX_NETWORK_VALUES:
        raise UserError(f"{cls.__name__}: {size:,} values with these settings, over {MAX_NETWORK_VALUES:,}; refused")
    return cls(n_genres=n_genres, **settings)


def spectrogram_params(settings: object) -> SpectrogramParams:
    """The log-mel front end's settings a checkpoint holds, each a plain number in a sensible range."""
    signature = {f.name: f.type for f in fields(SpectrogramParams)}
    checked = keyword_settings(settings, signature, "spectrogram")
    for key, value in checked.items():
        low, high = SPECTROGRAM_LIMITS[key]
        if not low <= value <= high:
            raise UserError(f"spectrogram setting {key}={value} is outside [{low}, {high}]; refused")
    return SpectrogramParams(**checked)


def genre_names(genres: object) -> list[str]:
    if (
        not isinstance(genres, list | tuple)
        or not 2 <= len(genres) <= MAX_GENRES
        or not all(isinstance(g, str) and 0 < len(g) <= 100 for g in genres)
        or len(set(genres)) != len(genres)
    ):
        raise UserError(f"its genres are not a list of distinct names ({short(genres)})")
    return list(genres)


def positive_int(value: object, what: str, high: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise UserError(f"its {what} is not a whole number in [1, {high}] ({short(value)})")
    return value


def positive_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise UserError(f"its {what} is not a number > 0 ({short(value)})")
    return float(value)

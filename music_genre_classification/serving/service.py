"""The models one API worker serves: checkpoints found from --model_path, loaded once in the background, and the
batching of concurrent requests through each network (GenreClassifier.predict_many in a thread, off the event loop).
"""

import asyncio
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from music_genre_classification.config import UserError
from music_genre_classification.palette import genre_colours
from music_genre_classification.serving.upload import ApiError

if TYPE_CHECKING:  # torch is imported by the loading thread, so that the port opens before it is
    from music_genre_classification.models.classifier import GenreClassifier, Prediction

log = logging.getLogger("music_genre_classification.serving.service")
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that cannot start: its supervisor then stops too


@dataclass
class Settings:
    model_paths: list[str]
    max_upload_mb: float = 50.0
    cors_origins: list[str] = field(default_factory=list)
    max_batch: int = 16  # files of concurrent requests sent through the network at once
    workers: int = 1
    upload_timeout_s: float = 20.0  # a client silent this long in the middle of an upload gets 408


def model_name(path: str | Path) -> str:
    return Path(path).stem


def checkpoint_paths(model_path: str | list | tuple) -> list[str]:
    """Checkpoints from --model_path: a file, a folder of *.ckpt, or several of these separated by commas."""
    items = model_path.split(",") if isinstance(model_path, str) else [str(p) for p in model_path]
    paths = []
    for item in (Path(i.strip()) for i in items if i.strip()):
        if item.is_dir():
            found = sorted(item.glob("*.ckpt"))
            if not found:
                raise UserError(f"{item}: no *.ckpt checkpoints in this folder")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise UserError(f"{item}: no such checkpoint or folder")
    if not paths:
        raise UserError("no checkpoint given: --model_path outputs/model_full.ckpt")
    names = [model_name(p) for p in paths]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"several checkpoints are named {', '.join(twice)}: models are chosen by file name")
    return [str(p) for p in paths]


class Batcher:
    """Files waiting for one model go through predict_many together, one batch at a time, in a worker thread."""

    def __init__(self, classifier: "GenreClassifier", max_batch: int):
        self.classifier, self.max_batch = classifier, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self.task = asyncio.create_task(self._run())

    async def predict(self, path: Path, tags: bool = False) -> tuple["Prediction | None", str | None]:
        """(prediction, None), or (None, why the audio cannot be classified); `tags`: with the audio's top tags."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((path, tags, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            paths, tagged = [path for path, _, _ in batch], [tags for _, tags, _ in batch]
            try:
                results = await loop.run_in_executor(self.pool, self._predict, paths, tagged)
            except Exception as err:  # not the audio's fault: every request of the batch gets a 500
                log.exception("batch of %d files failed", len(batch))
                results = [err] * len(batch)
            for (_, _, future), result in zip(batch, results):
                if future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _predict(self, paths: list[Path], tagged: list[bool]) -> list[tuple]:
        """The batch's predictions; the tags of the files that asked for them, in this thread too (one at a time)."""
        from music_genre_classification.data.audio import AudioError
        from music_genre_classification.models.tags import audio_tags

        results = []
        for (_, prediction, error), tags in zip(self.classifier.predict_many(paths, len(paths)), tagged):
            if prediction is not None and tags:
                try:
                    prediction.tags = audio_tags(paths[len(results)])
                except AudioError as err:
                    prediction, error = None, str(err)
            results.append((prediction, error))
        return results

    def close(self) -> None:
        self.task.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Model:
    name: str
    kind: str
    genres: list[str]
    val_metrics: dict
    batcher: Batcher

    def info(self) -> dict:
        info = {"name": self.name, "kind": self.kind, "genres": self.genres, "val_metrics": self.val_metrics}
        return info | {"colours": genre_colours(self.genres)}  # the web page draws each genre in its colour


class Service:
    """The models of one worker process, loaded once in the background, and its folder for uploads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.names = [model_name(p) for p in settings.model_paths]
        self.models: dict[str, Model] = {}
        self.uploads = Path(tempfile.mkdtemp(prefix="genre-serve-"))

    @property
    def ready(self) -> bool:
        return len(self.models) == len(self.names)

    async def load(self) -> None:
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, self._load_all)
        except Exception as err:  # a checkpoint that cannot be served: stop the whole service with one line
            print(f"error: {err}", file=sys.stderr, flush=True)
            os._exit(STARTUP_FAILURE)  # nothing is in flight: requests are refused with 503 until the models load
        for name, (classifier, hp, val_metrics) in loaded.items():
            batcher = Batcher(classifier, self.settings.max_batch)
            self.models[name] = Model(name, hp.get("kind", "cnn"), classifier.genres, val_metrics, batcher)
        log.info("ready: %s", ", ".join(self.names))

    def _load_all(self) -> dict:
        import torch

        from music_genre_classification.models.checkpoint import load_checkpoint
        from music_genre_classification.models.classifier import GenreClassifier

        if self.settings.workers > 1:  # the workers share the cores instead of each using them all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.settings.workers))
        loaded = {}
        for name, path in zip(self.names, self.settings.model_paths):
            checkpoint = load_checkpoint(path)
            metrics = checkpoint.get("val_metrics") or {}
            loaded[name] = (GenreClassifier.from_checkpoint(path), checkpoint["hyper_parameters"], metrics)
        return loaded

    def model(self, name: str) -> Model:
        if not self.ready:
            raise ApiError(503, "the models are still loading; try again in a few seconds")
        if name not in self.models:
            raise ApiError(404, f"no model named {name!r}; GET /models lists them: {', '.join(self.names)}")
        return self.models[name]

    def close(self) -> None:
        for model in self.models.values():
            model.batcher.close()
        for leftover in self.uploads.glob("*"):
            leftover.unlink(missing_ok=True)
        self.uploads.rmdir()

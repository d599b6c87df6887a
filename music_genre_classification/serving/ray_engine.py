"""`infer` and `embed` with --engine ray: Ray Data over the file list, the model in a pool of actors.

Each actor loads the checkpoint once and runs GenreClassifier.predict_many on its batches, making the same rows
(FolderRows) as the local engine; the driver writes them to the same resumable table as they come. On a cluster,
the checkpoint and the files must be at the same paths on every node (shared storage).
"""

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError, first_line

CPUS_PER_ACTOR = 2  # predict_many keeps two cores busy: the front end beside the network


class _Labeller:
    """One model per actor: a batch of paths -> their rows, as JSON text."""

    def __init__(self, model_path: str, batch_size: int, rows):
        from music_genre_classification.models.classifier import GenreClassifier

        self.classifier, self.batch_size, self.rows = GenreClassifier.from_checkpoint(model_path), batch_size, rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.classifier.predict_many(batch["path"], self.batch_size, self.rows.embeddings, self.rows.tags)
        return {"row": np.array([json.dumps(self.rows(*result)) for result in results], dtype=object)}


def ray_rows(model_path: str, paths: list[Path], batch_size: int, rows, address: str | None) -> Iterator[dict]:
    """The rows of `paths` in order, computed by actors on the Ray cluster at `address` (`auto`: the one started
    on this machine with `ray start`; `ray://host:10001`: a remote one), or on a local instance started here."""
    if not paths:
        return
    ray = _start(address)
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // CPUS_PER_ACTOR)
    data = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=max(1, len(paths) // batch_size))
    labelled = data.map_batches(
        _Labeller,
        fn_constructor_args=(str(Path(model_path).resolve()), batch_size, rows),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=min(CPUS_PER_ACTOR, ray.cluster_resources().get("CPU", 1)),
    )
    for record in labelled.iter_rows():
        yield json.loads(record["row"])


def _start(address: str | None):
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'music-genre-classification[library]'") from None
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the same lines on the terminal as the local engine
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:  # a local instance for this run, on this machine's cores
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot reach a Ray cluster at {address or 'this machine'} ({first_line(err)})") from None
    return ray

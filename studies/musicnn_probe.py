"""The musicnn probe (model=musicnn_probe) on the GTZAN spectrograms: which pooled embedding, chosen on artists the
head never saw, and what it scores on the fault-filtered test part (artists never seen) and on the random split.

Every choice is made on the train list only: the embedding and the head's C by cross-validation in folds of whole
artists, reported beside the accuracy on an artist-disjoint val part; the test parts are scored once, by the models
those choices give. The embeddings are computed once (the spectrogram route: the fixed adapter, then the MSD
backbone) and cached in .cache/musicnn; every run after the first reads them.

python -m studies.musicnn_probe [--output docs/results/musicnn_probe.md] [--work /tmp/musicnn_probe]
"""

import contextlib
import io
import tempfile
import time
from pathlib import Path

import fire

from music_genre_classification.config import compose
from music_genre_classification.models.musicnn_probe import EMBEDDINGS
from studies.results import Results

NEW_ARTISTS = ["split=fault_filtered", "split.artists=GTZANindex.txt"]


def _quietly(job):
    """A run's own printing (progress, reports) left out of the page; its figures are tabled."""
    with contextlib.redirect_stdout(io.StringIO()):
        return job()


def train_probe(work: Path, *overrides: str) -> dict:
    from music_genre_classification.training.train import fit

    cfg = compose("train", ["model=musicnn_probe", "~logger", f"output_dir={work}", *overrides])
    return _quietly(lambda: fit(cfg))


def test_probe(checkpoint: str) -> dict:
    from music_genre_classification.training.evaluate import test

    return _quietly(lambda: test(checkpoint, []))


def interval(result: dict, key: str = "accuracy") -> str:
    low, high = result[f"{key}_ci95"]
    return f"{result[key]:.3f} [{low:.3f}, {high:.3f}]"


def main(output: str | None = None, work: str | None = None) -> None:
    work_dir = Path(work or tempfile.mkdtemp(prefix="musicnn_probe_"))
    with Results(output, "musicnn_probe") as results:
        start = time.perf_counter()
        first = train_probe(work_dir / "first", *NEW_ARTISTS, "~model.grid")
        print(f"first run (embeds the 639 clips unless cached, then one head): {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        train_probe(work_dir / "again", *NEW_ARTISTS, "~model.grid")
        print(f"the same run again (embeddings from the cache): {time.perf_counter() - start:.1f} s")
        del first

        rows = []
        for embedding in EMBEDDINGS:
            r = train_probe(work_dir / embedding, *NEW_ARTISTS, f"model.grid.embedding=[{embedding}]")
            c = r["chosen"].get("classifier__C")
            rows.append([f"`{embedding}`", c, f"{r['cv/acc']:.3f}", f"{r['val/acc']:.3f}", f"{r['val/loss']:.3f}"])
            print(f"{embedding}: C {c}, out-of-fold acc {r['cv/acc']:.3f}, val acc {r['val/acc']:.3f}")
        results.table(
            "New artists: each embedding with the C that cross-validation on the train part chose (5 folds of whole "
            "artists), its out-of-fold accuracy there, and the accuracy and log loss on the artist-disjoint val part "
            "(15% of the train list, artists not in train):",
            ["embedding", "C", "out-of-fold acc", "val acc", "val log loss"],
            rows,
        )

        final = train_probe(work_dir / "new_artists", *NEW_ARTISTS, "split.val_fraction=0")
        tested = test_probe(final["best_checkpoint"])
        chosen = f"{final['embedding']}, C {final['chosen'].get('classifier__C')}"
        print(f"new artists, trained on the 442 train-list clips, chosen by CV there: {chosen}")
        print(f"  out-of-fold acc {final['cv/acc']:.3f}; test {interval(tested)}")
        random = train_probe(work_dir / "random")
        tested_random = test_probe(random["best_checkpoint"])
        chosen_random = f"{random['embedding']}, C {random['chosen'].get('classifier__C')}"
        print(f"random split: {chosen_random}; val acc {random['val/acc']:.3f}; test {interval(tested_random)}")

        def row(name, r, t, chosen):
            cal = t["calibration"]
            return [
                name,
                chosen,
                t["clips"],
                interval(t),
                interval(t, "macro_f1"),
                f"{cal['ece_before']:.3f} / {cal['ece_after']:.3f} ({cal['ece_if_calibrated']:.3f})",
                f"{r['temperature']:.2f}",
            ]

        results.table(
            "Test (scored once; 95% bootstrap intervals over artists for the fault-filtered part, over clips for the "
            "random split; ECE before / after the temperature fitted out of fold on train, and what a perfectly "
            "calibrated model would show on as many clips):",
            ["split", "chosen on train", "clips", "accuracy", "macro-F1", "ECE", "T"],
            [
                row("fault-filtered, new artists (train on all 442 train-list clips)", final, tested, chosen),
                row("random 70/15/15 (train on its 70%)", random, tested_random, chosen_random),
            ],
        )


if __name__ == "__main__":
    fire.Fire(main)

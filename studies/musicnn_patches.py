"""How many 3-s patches per 30-s window the musicnn probe needs: 3, 5 or all 10, chosen on artists the head never saw.

Each setting embeds the GTZAN spectrograms once (cached in .cache/musicnn, one cache per setting) and trains
`model=musicnn_probe` on the new-artist split (fault-filtered lists, artist index); the embedding and C are chosen by
cross-validation in folds of whole artists on the train part, and the setting is judged by that out-of-fold accuracy
and by the artist-disjoint val part. The test part is not read. The cost per 30-s clip of each setting is in
docs/musicnn.md (Speed).

python -m studies.musicnn_patches [--output docs/results/musicnn_patches.md] [--work /tmp/musicnn_patches]
"""

import tempfile
import time
from pathlib import Path

import fire

from studies.musicnn_probe import NEW_ARTISTS, train_probe
from studies.results import Results

PATCHES = (3, 5, None)  # None: all 10 patches of a 30-s window


def main(output: str | None = None, work: str | None = None) -> None:
    work_dir = Path(work or tempfile.mkdtemp(prefix="musicnn_patches_"))
    rows = []
    with Results(output, "musicnn_patches") as results:
        for patches in PATCHES:
            name = "all 10" if patches is None else str(patches)
            start = time.perf_counter()
            setting = "null" if patches is None else patches
            folder = work_dir / f"patches_{name.replace(' ', '_')}"
            r = train_probe(folder, *NEW_ARTISTS, f"model.max_patches={setting}")
            seconds = time.perf_counter() - start
            chosen = f"{r['embedding']}, C {r['chosen'].get('classifier__C')}"
            scores = f"out-of-fold acc {r['cv/acc']:.3f}, val acc {r['val/acc']:.3f}"
            rows.append([name, chosen, f"{r['cv/acc']:.3f}", f"{r['val/acc']:.3f}", f"{r['val/loss']:.3f}"])
            print(f"{name} patches: {chosen}; {scores} ({seconds:.0f} s, embedding the clips included)")
        results.table(
            "New artists, per setting: the embedding and C that cross-validation on the train part chose (5 folds of "
            "whole artists), its out-of-fold accuracy there, and the accuracy and log loss on the artist-disjoint val "
            "part:",
            ["patches per 30-s window", "chosen on train", "out-of-fold acc", "val acc", "val log loss"],
            rows,
        )


if __name__ == "__main__":
    fire.Fire(main)

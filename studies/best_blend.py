"""What `train experiment=best` blends, chosen out of fold: every combination of the candidate models trained on the
4 artist folds of Sturm's train list, judged on the 442 train-list clips each scored by the fold's models that never
heard its artist; then the test row of the chosen ensemble, scored once by `test`.

The candidates are member checkpoints of `train experiment=best members=null split.fold=K seed=K <overrides>`, of
any kind: CNNs, the musicnn probe. Each combination gets the weights and the temperature that `ensemble` would
choose on these clips (lowest log loss), so its log loss and ECE after the temperature are fitted on the clips they
are measured on: they rank the blends, the test row checks the chosen one. With --test, the blend of the lowest
out-of-fold log loss is written there by `ensemble` (unless that file exists) and scored by `test` (unless its
report, <checkpoint>.test.json, exists: the test part is scored once).

python -m studies.best_blend --checkpoints 'members/*.ckpt' [--test ensemble.ckpt] [--output docs/results/best.md]
(--checkpoints: paths or glob patterns, separated by commas)
"""

import contextlib
import glob
import io
import itertools
import json
from pathlib import Path

import fire
import numpy as np

from music_genre_classification.models.calibration import ece_of_a_calibrated_model, reliability, temperature_scaled
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.predictors import checkpoint_kind
from music_genre_classification.training.ensemble import blend_weights, describe, out_of_fold
from music_genre_classification.training.evaluate import metrics
from studies.results import Results


def model_name(ckpt: dict) -> str:
    """A candidate in a few words: the probe, or the network, its input and its recipe."""
    model = (ckpt["hyper_parameters"].get("run_config") or {}).get("model") or ckpt["hyper_parameters"]
    if checkpoint_kind(ckpt) == "musicnn_probe":
        return "musicnn probe" + (" (grid by log loss)" if model.get("select") == "loss" else "")
    tilt = " + level/EQ tilt" if model.get("gain") or model.get("tilt") else ""
    return describe(ckpt).replace("GenreCNN", "CNN").replace(" on 40 MFCCs", " on MFCCs") + tilt


def candidate_folds(ckpts: list[dict]) -> tuple[list[str], list[list[int]]]:
    """The models, and per fold (its val clips) the index of each model's member, in the models' order."""
    folds: dict[frozenset, dict[str, int]] = {}
    for i, ckpt in enumerate(ckpts):
        if checkpoint_kind(ckpt) == "ensemble":
            raise SystemExit("give the members' checkpoints (each fold's), not an ensemble")
        val = frozenset(r["clip"] for r in ckpt["split_table"] if r["part"] == "val")
        folds.setdefault(val, {})[model_name(ckpt)] = i
    models = sorted({name for fold in folds.values() for name in fold})
    if any(sorted(fold) != models for fold in folds.values()):
        raise SystemExit("every fold needs one member of each model")
    ordered = sorted(folds.items(), key=lambda item: min(item[0]))
    return models, [[fold[m] for m in models] for _, fold in ordered]


def ece(probs: np.ndarray, labels: np.ndarray) -> float:
    return reliability(probs, labels)["ece"]


def tested(checkpoint: str, members: list[str]) -> dict:
    """The test report of the chosen blend: written by `ensemble` from `members` unless `checkpoint` exists, then
    scored once by `test` unless its report (<checkpoint>.test.json) exists."""
    from music_genre_classification.training.ensemble import make_ensemble
    from music_genre_classification.training.evaluate import test

    if not Path(checkpoint).exists():
        print(f"ensemble --checkpoints {','.join(members)} --output_path {checkpoint}")
        make_ensemble(members, checkpoint)
    report = Path(checkpoint).resolve().with_suffix(".test.json")
    if not report.exists():
        print(f"test {checkpoint}")
        test(checkpoint, [])
    return json.loads(report.read_text())


def main(checkpoints: str, test: str | None = None, output: str | None = None) -> None:
    given = checkpoints.split(",") if isinstance(checkpoints, str) else checkpoints
    paths = [p for pattern in given if pattern for p in (sorted(glob.glob(pattern)) or [pattern])]
    ckpts = [load_checkpoint(p) for p in paths]
    genres = list(ckpts[0]["hyper_parameters"]["genres"])
    models, groups = candidate_folds(ckpts)
    with Results(output, "best_blend") as results:
        with contextlib.redirect_stdout(io.StringIO()):  # each member's data line
            labels, probs = out_of_fold(ckpts, groups, genres)
        print(f"{len(models)} models x {len(groups)} folds; {len(labels)} out-of-fold clips")
        rows, best = [], None
        for size in range(1, len(models) + 1):
            for chosen in itertools.combinations(range(len(models)), size):
                if sum(models[i].startswith("musicnn probe") for i in chosen) > 1:
                    continue  # the probe's variants are alternatives, not members side by side
                weights, temperature = blend_weights(probs[list(chosen)], labels)
                blend = np.einsum("m,mcg->cg", weights, probs[list(chosen)])
                scaled = temperature_scaled(blend, temperature)
                m = metrics(scaled, labels, genres)
                what = " + ".join(f"{models[i]} ({w:.2f})" if size > 1 else models[i] for i, w in zip(chosen, weights))
                floor = ece_of_a_calibrated_model(scaled)
                rows.append(
                    [
                        what,
                        f"{m['acc']:.3f}",
                        f"{m['f1']:.3f}",
                        f"{m['loss']:.3f}",
                        f"{ece(blend, labels):.3f} / {ece(scaled, labels):.3f} ({floor:.3f})",
                        f"{temperature:.2f}",
                    ]
                )
                print(f"{what}: acc {m['acc']:.3f}, log loss {m['loss']:.3f}, T {temperature:.2f}")
                if best is None or m["loss"] < best[1]:  # on a tie the fewer models
                    best = (what, m["loss"], chosen)
        results.table(
            f"Out of fold: the {len(labels)} train-list clips, each scored by the models of its fold (trained on the "
            "other 3 folds, artists never heard); every combination of the candidates with the weights (in brackets) "
            "and temperature T that `ensemble` chooses on these clips (each member through its own temperature "
            "first); ECE before / after T (15 bins), and in brackets what a perfectly calibrated model would show on "
            "as many clips. The musicnn backbone was trained on Million Song Dataset previews, which probably include "
            "some GTZAN artists:",
            ["models (weights)", "accuracy", "macro-F1", "log loss", "ECE before / after T (calibrated)", "T"],
            rows,
        )
        print(f"lowest out-of-fold log loss: {best[0]}")
        if test:
            r = tested(test, [paths[fold[i]] for fold in groups for i in best[2]])
            cal = r["calibration"]
            ratio = cal["ece_after"] / cal["ece_if_calibrated"]
            results.table(
                f"Test, the fault-filtered part ({r['bootstrap']['units']} artists never heard; 95% bootstrap "
                "intervals over artists), scored once by `test` on the chosen ensemble (the same caveat on the "
                "probe's MSD previews):",
                ["clips", "accuracy", "macro-F1", "ECE before / after T", "calibrated model's ECE", "after / that"],
                [
                    [
                        sum(sum(row) for row in r["confusion"]["matrix"]),
                        f"{r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}]",
                        f"{r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}]",
                        f"{cal['ece_before']:.3f} / {cal['ece_after']:.3f} (T {cal['temperature']:.2f})",
                        f"{cal['ece_if_calibrated']:.3f}",
                        f"{ratio:.2f}x",
                    ]
                ],
            )


if __name__ == "__main__":
    fire.Fire(main)

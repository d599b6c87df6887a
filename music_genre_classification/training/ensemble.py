"""ensemble: one checkpoint that averages the genre probabilities of several models, weights chosen on val.

The members (CNN, features models, even ensembles) must share their split: the blend's parts are the clips every
member puts in the same part, so no member has trained on a clip the weights are chosen on. Each member scores the
shared val clips on its own data (spectrograms, a features table), through its own temperature; the weights are the
point of a grid over the simplex (steps of 0.05) with the lowest val log loss, and the blend gets a temperature of its
own, fitted on the same val clips.

Members trained on the folds of one cross-validation (split.folds=K, split.fold=0..K-1; `train experiment=best`)
are cross-fitted instead: the same G models (e.g. a CNN and a CRNN) on each of the K folds, listed in the same order
per fold. Each fold's members score that fold's val clips, which none of them trained on, so the G weights and the
temperature are chosen on every clip of the K val parts (out of fold), not on one small val part; the blend then
averages the K folds (each member weighs w_g / K), and its split holds the test part all members share.
"""

import itertools
from pathlib import Path

import numpy as np
import torch

from music_genre_classification.config import UserError, compose
from music_genre_classification.models.calibration import fit_temperature, temperature_scaled
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.predictors import KIND_KEYS, EnsembleFrontEnd, checkpoint_kind, predictor
from music_genre_classification.training.evaluate import clip_scores, common_ids, log_loss, metrics


def shared_split(ckpts: list[dict]) -> tuple[list[dict], int]:
    """The rows of the clips every member holds in the same part, and how many clips were left out."""
    tables = [{row["clip"]: row for row in ckpt.get("split_table") or []} for ckpt in ckpts]
    shared = [
        row
        for clip, row in tables[0].items()
        if all(clip in table and table[clip]["part"] == row["part"] for table in tables[1:])
    ]
    return shared, len(set().union(*tables)) - len(shared)


def describe(ckpt: dict) -> str:
    """A member in a few words: its kind, and for a network its class and input (GenreCRNN, GenreCNN on 40 MFCCs)."""
    net = ckpt["hyper_parameters"].get("net")
    if checkpoint_kind(ckpt) != "cnn" or not isinstance(net, dict):
        return checkpoint_kind(ckpt)
    name = str(net.get("_target_", "network")).rsplit(".", 1)[-1]
    return f"{name} on {net['n_mfcc']} MFCCs" if net.get("n_mfcc") else name


def fold_groups(paths: list[str], ckpts: list[dict]) -> list[list[int]]:
    """Members grouped by their val clips: one group when they share a split, one per fold when they are the folds
    of a cross-validation; then every fold must hold the same models in the same order, and no val clip of a fold
    may be in another fold's val (each clip scored once, by the members that did not train on it)."""
    groups: dict[frozenset, list[int]] = {}
    for i, ckpt in enumerate(ckpts):
        val = frozenset(row["clip"] for row in ckpt.get("split_table") or [] if row["part"] == "val")
        groups.setdefault(val, []).append(i)
    vals, folds = list(groups), list(groups.values())
    if not all(vals):  # a member without a val part: one split, which then shares no val clip (make_ensemble says so)
        return [list(range(len(ckpts)))]
    if len(folds) == 1:
        return folds
    model = lambda i: str(ckpts[i]["hyper_parameters"].get("net", checkpoint_kind(ckpts[i])))  # noqa: E731
    for fold in folds[1:]:
        if len(fold) != len(folds[0]) or any(model(i) != model(j) for i, j in zip(fold, folds[0])):
            raise UserError(
                f"{paths[fold[0]]}: the members' val parts differ, so they must be the folds of one cross-validation, "
                "each fold with the same models in the same order (split.folds=K split.fold=0..K-1)"
            )
    if sum(map(len, vals)) != len(frozenset().union(*vals)):
        raise UserError(
            "the members' val parts overlap without being the same: train them on one split or one split.folds"
        )
    return folds


def simplex_grid(members: int, step: float) -> np.ndarray:
    """Every weight vector of `members` non-negative multiples of `step` that sum to 1."""
    n = round(1 / step)
    cuts = itertools.combinations(range(n + members - 1), members - 1)  # stars and bars
    return np.array([np.diff([-1, *c, n + members - 1]) - 1 for c in cuts]) / n


def out_of_fold(ckpts: list[dict], groups: list[list[int]], genres: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The genre of every val clip and each model's probabilities for it [G, clips, genres], scored by the members
    of its own fold (`fold_groups`: G models per fold), none of which trained on it."""
    members = [predictor(ckpt) for ckpt in ckpts]
    EnsembleFrontEnd([m.front_end for m in members])  # the same windows of audio for all, or a one-line error
    data_cfg = compose("test", []).data
    labels, probs = [], []  # per fold: its members' probabilities [G, clips, genres] on its val clips
    for group in groups:
        fold_table = shared_split([ckpts[i] for i in group])[0]
        scores = [clip_scores(ckpts[i], members[i], "val", {}, data_cfg, None, fold_table) for i in group]
        ids = common_ids(scores)
        labels.append(scores[0].aligned(ids, genres)[0])
        probs.append(np.stack([s.aligned(ids, genres)[1] for s in scores]))
    return np.concatenate(labels), np.concatenate(probs, axis=1)


def blend_weights(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """The weights of G models' probabilities [G, clips, genres] with the lowest log loss over a simplex grid, and
    the temperature of their blend, both fitted on these clips."""
    grid = simplex_grid(len(probs), 0.05 if len(probs) <= 5 else 0.1)
    weights = grid[int(log_loss(np.einsum("wm,mcg->wcg", grid, probs), labels).argmin())]
    return weights, fit_temperature(np.einsum("m,mcg->cg", weights, probs), labels)


def make_ensemble(checkpoints: str | list[str], output_path: str) -> dict:
    """One checkpoint averaging several models' probabilities (CNN and features alike), weights chosen on val.

    `checkpoints`: a list, or one string separated by commas (the command line's --checkpoints a.ckpt,b.ckpt)."""
    if isinstance(checkpoints, str):
        checkpoints = checkpoints.split(",")
    checkpoints = [p.strip() for p in checkpoints if p.strip()]
    if len(checkpoints) < 2:
        raise UserError("an ensemble needs at least two checkpoints: --checkpoints a.ckpt,b.ckpt")
    output = Path(output_path)
    if output.suffix != ".ckpt":
        raise UserError(f"{output}: the ensemble is written as a .ckpt file")
    ckpts = [load_checkpoint(path) for path in checkpoints]
    genres = list(ckpts[0]["hyper_parameters"]["genres"])
    for path, ckpt in zip(checkpoints, ckpts):
        if sorted(ckpt["hyper_parameters"]["genres"]) != sorted(genres):
            raise UserError(f"{path}: tells other genres than {checkpoints[0]}")
    groups = fold_groups(checkpoints, ckpts)
    table, left_out = shared_split(ckpts)
    counts = {part: sum(row["part"] == part for row in table) for part in ("train", "val", "test")}
    print(f"split shared by all members: {', '.join(f'{p} {n}' for p, n in counts.items())}; {left_out} clips left out")
    if len(groups) == 1 and not counts["val"]:
        raise UserError("the checkpoints share no val clip: train them on the same split (split config and seed)")
    if len(groups) > 1:
        print(f"cross-fitted: {len(groups)} folds of {len(groups[0])} member(s); weights chosen on their val clips")

    labels, probs = out_of_fold(ckpts, groups, genres)
    weights, temperature = blend_weights(probs, labels)
    blend = temperature_scaled(np.einsum("m,mcg->cg", weights, probs), temperature)
    val, *members_val = [
        {f"val/{k}": v for k, v in metrics(p, labels, genres).items() if k != "confusion"} for p in (blend, *probs)
    ]
    sources = [str(Path(p).resolve()) for p in checkpoints]
    run_config = {"checkpoints": sources, "val_members": members_val, "folds": len(groups)}
    position = {i: g for group in groups for g, i in enumerate(group)}  # member -> its model's place in its fold
    weights = [float(weights[position[i]]) / len(groups) for i in range(len(ckpts))]
    hyper_parameters = {"kind": "ensemble", "genres": genres, "weights": weights, "run_config": run_config}
    hyper_parameters["temperature"] = temperature
    # each member whole but for training state (optimizer, callbacks): what its kind needs, genres, config, split
    kept = lambda c: ("hyper_parameters", "split_table", "val_metrics", KIND_KEYS[checkpoint_kind(c)])  # noqa: E731
    stored = [{k: c.get(k) for k in kept(c)} for c in ckpts]
    output.parent.mkdir(parents=True, exist_ok=True)
    ensemble = {"hyper_parameters": hyper_parameters, "members": stored, "split_table": table, "val_metrics": val}
    torch.save(ensemble, output)

    print(f"val: {len(labels)} clips; weights chosen by the lowest val log loss over a simplex grid")
    for i, m in zip(groups[0], members_val):
        what = f"{checkpoints[i]} ({describe(ckpts[i])})" + (" and its other folds" if len(groups) > 1 else "")
        print(
            f"  {what}: weight {weights[i] * len(groups):.2f}, val acc {m['val/acc']:.4f}, log loss {m['val/loss']:.4f}"
        )
    print(f"  blend: val acc {val['val/acc']:.4f}, log loss {val['val/loss']:.4f} (temperature {temperature:.3f})")
    print(f"written: {output}")
    return hyper_parameters

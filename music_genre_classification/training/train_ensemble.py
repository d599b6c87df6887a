"""train with `members` (e.g. experiment=best): one training per member, then one ensemble checkpoint of them."""

import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from music_genre_classification.config import UserError
from music_genre_classification.training.runs import new_run_dir, point_latest


def train_members(cfg: DictConfig, overrides: list[str], train: Callable[[list[str]], dict]) -> dict:
    """Each entry of cfg.members is a string of overrides added to the command's (e.g. "seed=7", "model=cnn1d").
    The blend's weights and temperature are chosen on val clips no member trained on: the members share one split
    (split.seed fixed), or are the folds of one (split.folds=K, then split.fold=k per member, the same models in
    each fold; see `ensemble`). outputs/model_full.ckpt then points to the ensemble. `train`: the `train` command,
    run once per member (passed in, as it is the caller)."""
    from music_genre_classification.training.ensemble import make_ensemble

    members = [str(m) for m in cfg.members]
    if len(members) < 2:
        raise UserError("members: an ensemble needs at least two, e.g. members='[seed=42,seed=7]'")
    started, results = time.perf_counter(), []
    for i, extra in enumerate(members, 1):
        print(f"\n== member {i}/{len(members)}: {extra}", flush=True)
        results.append(train([*overrides, *extra.split(), "members=null"]))
        if "best_checkpoint" not in results[-1] or not results[-1].get("temperature"):
            raise UserError(f"member {extra!r} kept no val part to choose the ensemble's weights on")
    run_dir = new_run_dir(cfg.output_dir)
    cfg.run_dir = str(run_dir)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    output = run_dir / "ensemble.ckpt"
    print(f"\n== ensemble of {len(members)} members", flush=True)
    make_ensemble([r["best_checkpoint"] for r in results], str(output))
    point_latest(output, Path(cfg.output_dir) / "model_full.ckpt")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nensemble checkpoint: {output}\ntraining time:       {minutes:.1f} min for {len(members)} members")
    return {"run_dir": str(run_dir), "best_checkpoint": str(output), "members": results, "minutes": minutes}

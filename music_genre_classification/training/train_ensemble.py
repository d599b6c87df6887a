"""train with `members` (e.g. experiment=best): one training per member, then one ensemble checkpoint of them."""

import time
from collections.abc import Callable

from omegaconf import DictConfig

from music_genre_classification.config import UserError
from music_genre_classification.training.runs import Run


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
    run = Run(cfg, log=False)  # each member has its MLflow run; the ensemble adds no training
    run.record_setup()
    output = run.dir / "ensemble.ckpt"
    print(f"\n== ensemble of {len(members)} members", flush=True)
    make_ensemble([r["best_checkpoint"] for r in results], str(output))
    minutes = (time.perf_counter() - started) / 60
    result = {"run_dir": str(run.dir), "best_checkpoint": str(output), "members": results, "minutes": minutes}
    return run.finish(output, result, summary=f"training time:   {minutes:.1f} min for {len(members)} members")

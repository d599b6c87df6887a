"""A training run's place on disk: its folder outputs/<date>/<time>/, and outputs/model_full.ckpt -> its model."""

import os
from datetime import datetime
from pathlib import Path

RUN_DIR_ENV = "MGC_RUN_DIR"  # DDP workers re-run the command; they join the run their launcher started


def new_run_dir(output_dir: str) -> Path:
    if os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[RUN_DIR_ENV])
    now = datetime.now()
    run_dir = base = Path(output_dir) / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    for n in range(1, 1000):
        if not run_dir.exists():
            break
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def point_latest(best: Path, link: Path) -> None:
    """outputs/model_full.ckpt -> the best checkpoint of the latest run (a relative symlink, else a copy)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    except OSError:
        tmp.write_bytes(best.read_bytes())
    os.replace(tmp, link)

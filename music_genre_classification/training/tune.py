"""tune: an Optuna study over a model's hyper-parameters; every trial is an ordinary `train` run (training/train.fit).

The study lives in `tune.storage`, so the same command resumes it and several processes (on one machine, or on many
with a PostgreSQL or MySQL server) share it. At the end: the best trials, parameter importances, plots, and the best
trial as an experiment config, <output_dir>/tune/<study_name>/experiment/tuned_<study_name>.yaml (never in configs/:
`train hydra.searchpath=[file://<that tune folder>] experiment=tuned_<study_name>` uses it where it is; copied into
configs/experiment, it becomes one of the project's recipes).
"""

import contextlib
import copy
import hashlib
import os
import re
import shlex
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from music_genre_classification.config import (
    UserError,
    artifact_location,
    build,
    compose,
    first_line,
    make_sqlite_folder,
)
from music_genre_classification.training.progress import quiet_third_parties
from music_genre_classification.training.train import fit

DIRECTIONS = {"val/loss": "minimize", "val/f1": "maximize", "val/acc": "maximize"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TRAIN_GROUPS = ("model", "datamodule", "split", "trainer", "logger", "callbacks", "data")  # model first: it sets more


@dataclass
class Param:
    """One searched config key: its Optuna distribution; categorical lists travel as text through Optuna."""

    key: str
    distribution: BaseDistribution
    add: bool = False  # `+key`: a key the config does not have yet
    values: dict = field(default_factory=dict)  # Optuna's choice -> the config value

    def suggest(self, trial: optuna.Trial):
        d = self.distribution
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(self.key, d.low, d.high, log=d.log, step=d.step)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)
        return self.values[trial.suggest_categorical(self.key, d.choices)]

    def choice_of(self, value) -> object | None:
        """The distribution's form of a config value, or None where the space does not hold it."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return next((c for c, v in self.values.items() if v == value), None)
        if isinstance(value, int | float) and not isinstance(value, bool) and d.low <= value <= d.high:
            return int(value) if isinstance(d, IntDistribution) else float(value)
        return None


def parse_param(key: str, spec: object) -> Param:
    """hydra-optuna-sweeper's syntax, read by Hydra's own override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    usage = "interval(a, b), tag(log, interval(a, b)), range(a, b[, step]) or choice(x, y, ...)"
    name = key.removeprefix("+")
    try:
        sweep = OverridesParser.create().parse_override(f"{name}={spec}").value()
    except HydraException as err:
        raise UserError(f"tune.params.{key}: cannot read {spec!r} ({first_line(err)}); use {usage}") from None
    log = "log" in getattr(sweep, "tags", ())
    if isinstance(sweep, IntervalSweep) and sweep.start < sweep.end:
        return Param(name, FloatDistribution(sweep.start, sweep.end, log=log), key.startswith("+"))
    whole = isinstance(sweep, RangeSweep) and all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step))
    if whole and sweep.start < sweep.stop and not sweep.shuffle:
        step = 1 if log else sweep.step  # Optuna samples a log int range in steps of 1
        return Param(name, IntDistribution(sweep.start, sweep.stop, log=log, step=step), key.startswith("+"))
    if isinstance(sweep, ChoiceSweep) and sweep.list and not log:
        values = {v if isinstance(v, str | int | float | bool) else str(v): v for v in sweep.list}
        return Param(name, CategoricalDistribution(list(values)), key.startswith("+"), values)
    raise UserError(f"tune.params.{key}: {spec!r} is not a search distribution; use {usage} (a < b, whole numbers)")


def search_space(params: DictConfig, cfg: DictConfig) -> list[Param]:
    if not params:
        raise UserError("tune.params is empty: name at least one config key and its distribution (see configs/tune)")
    space = [parse_param(key, spec) for key, spec in flat(params).items()]
    for param in space:
        present = OmegaConf.select(cfg, param.key, default="<missing>") != "<missing>"
        if param.add and present:
            raise UserError(f"tune.params.+{param.key}: the config has this key already; drop the leading +")
        if not param.add and not present:
            raise UserError(f"tune.params.{param.key}: no such key in the config (a leading + adds one)")
    return space


def flat(params: DictConfig, prefix: str = "") -> dict:
    """{"model": {"lr": spec}} -> {"model.lr": spec}: what `+tune.params.model.lr='interval(...)'` gives."""
    out = {}
    for key, spec in params.items():
        if isinstance(spec, DictConfig):
            out |= flat(spec, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = spec
    return out


def trial_config(base: DictConfig, space: list[Param], values: dict) -> DictConfig:
    cfg = copy.deepcopy(base)
    with open_dict(cfg):
        for param in space:
            OmegaConf.update(cfg, param.key, values[param.key], merge=False, force_add=param.add)
        if "grid" in cfg.model:  # a features model's own grid is off: the study sets its values
            cfg.model.grid = None
    return cfg


def open_study(settings: DictConfig, user_overrides: list[str]) -> optuna.Study:
    if not re.fullmatch(r"[\w.-]+", str(settings.study_name)):
        raise UserError(f"tune.study_name must be letters, digits, '.', '_' or '-', not {settings.study_name!r}")
    url = str(settings.storage)
    heartbeat = int(settings.heartbeat_s)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def load() -> optuna.Study:
        return optuna.create_study(
            storage=optuna.storages.RDBStorage(  # a trial whose process stops beating is failed, then run again
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=4 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            ),
            study_name=settings.study_name,
            direction=DIRECTIONS[settings.metric],
            load_if_exists=True,
        )

    try:
        make_sqlite_folder(url)
        with one_at_a_time(url):
            study = load()
    except ImportError as err:
        raise UserError(f"tune.storage {hidden_password(url)}: {first_line(err)} (pip install its driver)") from None
    except Exception as err:  # sqlalchemy: a bad URL, an unreachable server
        raise UserError(f"tune.storage {hidden_password(url)}: {first_line(err)}") from None
    identity = {"metric": str(settings.metric), "overrides": user_overrides}
    for name, value in identity.items():
        kept = study.user_attrs.get(name)
        if kept is None:
            study.set_user_attr(name, value)
        elif kept != value:
            raise UserError(
                f"study {settings.study_name!r} was run with {name} {kept}, not {value}: "
                "resume it with those, or start another with tune.study_name=..."
            )
    return study


@contextlib.contextmanager
def one_at_a_time(url: str):
    """Processes that start together on one sqlite file open it one after the other: MLflow and Optuna create their
    tables on first use, and that is not safe twice at once. A database server needs no lock."""
    from filelock import FileLock
    from sqlalchemy.engine import make_url

    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:":
        yield
        return
    name = hashlib.sha1(str(Path(database).resolve()).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"mgc-sqlite-{name}.lock", timeout=600):
        yield


def hidden_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class Tracking:
    """The study's MLflow parent run (its id kept in the study, so every process and resume uses it) and its trials'
    child runs; nothing when the config has no logger (~logger)."""

    def __init__(self, cfg: DictConfig, study: optuna.Study):
        self.client = None
        if not cfg.get("logger"):
            return
        from mlflow import MlflowClient

        uri = cfg.logger.tracking_uri
        make_sqlite_folder(uri)
        with one_at_a_time(uri):  # the first process creates the store and the parent run
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(cfg.logger.experiment_name)
            location = artifact_location(uri, cfg.output_dir)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(cfg.logger.experiment_name, location)
            )
            self.parent = study.user_attrs.get("mlflow_parent_run_id")
            if self.parent is None:
                self.parent = self.parent_run(study, cfg)
                study.set_user_attr("mlflow_parent_run_id", self.parent)

    def parent_run(self, study: optuna.Study, cfg: DictConfig) -> str:
        """A new parent run; processes that start the study together all keep the earliest one."""
        storage = hidden_password(str(cfg.tune.storage))
        tags = {"optuna.study": study.study_name, "optuna.storage": storage}
        mine = self.client.create_run(self.experiment_id, run_name=f"tune {study.study_name}", tags=tags).info.run_id
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.storage` = '{storage}' "
            "and attributes.status = 'RUNNING'",
        )
        parent = min(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
        if parent != mine:
            self.client.delete_run(mine)
        else:
            self.client.log_param(parent, "metric", cfg.tune.metric)
            for key, spec in flat(cfg.tune.params).items():
                self.client.log_param(parent, f"space/{key}", spec)
        return parent

    def child(self, study: optuna.Study, trial: optuna.Trial) -> str | None:
        if self.client is None:
            return None
        tags = {"mlflow.parentRunId": self.parent, "optuna.study": study.study_name, "optuna.trial": str(trial.number)}
        run_name = f"{study.study_name} trial {trial.number}"
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def end_child(self, run_id: str | None, status: str) -> None:
        if run_id is not None:
            self.client.set_terminated(run_id, status)

    def finish(self, artifacts: list[Path], metrics: dict) -> None:
        if self.client is None:
            return
        for path in artifacts:
            self.client.log_artifact(self.parent, str(path))
        for name, value in metrics.items():
            self.client.log_metric(self.parent, name, value)
        self.client.set_terminated(self.parent, "FINISHED")


def pruning(trial: optuna.Trial, metric: str):
    """optuna-integration's Lightning callback: the trial reports `metric` after each training epoch and stops when
    the pruner says so; not in the validation of the best checkpoint that follows the training."""
    from lightning.pytorch.trainer.states import TrainerFn
    from optuna_integration import PyTorchLightningPruningCallback

    class EpochPruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, module) -> None:
            if trainer.state.fn == TrainerFn.FITTING:
                super().on_validation_end(trainer, module)

    return EpochPruning(trial, monitor=metric)


def objective(study: optuna.Study, base: DictConfig, space: list[Param], settings: DictConfig, tracking: Tracking):
    metric, n_trials = str(settings.metric), int(settings.n_trials)
    failed: list[str] = []  # why this process's latest trials failed, in a row

    def run(trial: optuna.Trial) -> float:
        """The trial's metric; NaN (Optuna's mark of a failed trial) when its values broke the training."""
        ahead = [t for t in study.get_trials(False, (*FINISHED, TrialState.RUNNING)) if t.number < trial.number]
        if len(ahead) >= n_trials:  # processes that finished together both began a last trial: the later stops
            trial.set_user_attr("surplus", True)
            print(f"trial {trial.number} not run: the study has its {n_trials} trials, finished or running")
            return float("nan")
        cfg = trial_config(base, space, {p.key: p.suggest(trial) for p in space})
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        features = "pipeline" in cfg.model
        callbacks = [] if features else [pruning(trial, metric)]
        run_id = tracking.child(study, trial)
        try:
            result = fit(cfg, callbacks, mlflow_run_id=run_id)
        except optuna.TrialPruned:
            trial.set_user_attr("run_dir", cfg.run_dir)
            tracking.end_child(run_id, "KILLED")
            raise
        except Exception as err:  # e.g. more neighbours than clips: the study goes on with other values
            tracking.end_child(run_id, "FAILED")
            failed.append(str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {first_line(err)}")
            trial.set_user_attr("error", failed[-1])
            print(f"trial {trial.number} failed: {failed[-1]}", file=sys.stderr)
            return float("nan")
        except BaseException:
            tracking.end_child(run_id, "FAILED")
            raise
        failed.clear()
        tracking.end_child(run_id, "FINISHED")
        if metric not in result:
            raise UserError(f"tune chooses on {metric} of the val clips, and this split has none (split.val_fraction)")
        trial.set_user_attr("run_dir", result["run_dir"])
        trial.set_user_attr("checkpoint", result["best_checkpoint"])
        for name in ("val/loss", "val/acc", "val/f1"):
            if name in result:
                trial.set_user_attr(name, result[name])
        return result[metric]

    run.failed = failed
    return run


def tune(overrides: list[str]) -> optuna.Study:
    """Optuna study over a model's hyper-parameters, e.g. tune=cnn split=fault_filtered tune.n_trials=30; resumable."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries, plots
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial of its own: the table at the end says it
    quiet_third_parties()  # MLflow's table creation, alembic
    cfg = compose("tune", overrides, hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg.hydra
    settings = cfg.tune
    if settings.metric not in DIRECTIONS:
        raise UserError(f"tune.metric must be one of {', '.join(DIRECTIONS)}, not {settings.metric!r}")
    base = copy.deepcopy(cfg)
    with open_dict(base):
        del base.tune
    space = search_space(settings.params, base)  # bad specs and keys fail here, before any trial
    build(settings.sampler, seed=int(settings.seed))  # and bad sampler or pruner settings
    pruner = build(settings.pruner)
    user_overrides = sorted(str(o) for o in overrides if not str(o).lstrip("+~").startswith("tune."))
    study = open_study(settings, user_overrides)
    # seeded, and different in each process that joins the study (or resumes it) after some trials
    study.sampler = build(settings.sampler, seed=int(settings.seed) + len(study.trials))
    study.pruner = pruner
    if settings.enqueue_defaults and not study.trials:
        defaults = {p.key: p.choice_of(OmegaConf.select(base, p.key, default=None)) for p in space}
        defaults = {key: value for key, value in defaults.items() if value is not None}
        if defaults:
            study.enqueue_trial(defaults, user_attrs={"enqueued": "the config's values"}, skip_if_exists=True)
    tracking = Tracking(cfg, study)
    run = objective(study, base, space, settings, tracking)

    n_trials, heartbeat = int(settings.n_trials), int(settings.heartbeat_s)
    started = time.monotonic()
    timeout = None if settings.timeout_min is None else 60 * float(settings.timeout_min)
    while True:
        optuna.storages.fail_stale_trials(study)  # trials of a stopped process: failed, then run again
        done, running = count(study, FINISHED), count(study, (TrialState.RUNNING,))
        if done >= n_trials:
            break
        if timeout is not None and time.monotonic() - started >= timeout:
            print(f"tune.timeout_min reached: {done} of {n_trials} trials finished; the same command resumes the study")
            break
        if done + running >= n_trials:  # the last trials run elsewhere (or in a process that stopped: wait to know)
            time.sleep(heartbeat)
            continue
        study.optimize(run, n_trials=1)
        if len(run.failed) >= 3:
            raise UserError(f"{len(run.failed)} trials in a row failed, the last with: {run.failed[-1]}")
    report(study, cfg, choices, space, tracking)
    return study


def report(study: optuna.Study, cfg: DictConfig, choices: dict, space: list[Param], tracking: Tracking) -> None:
    settings = cfg.tune
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    states = {s.name.lower(): count(study, (s,)) for s in TrialState if count(study, (s,))}
    print(f"\nstudy {study.study_name!r}: " + ", ".join(f"{n} {s}" for s, n in states.items()))
    if not complete:
        return
    out = Path(cfg.output_dir) / "tune" / study.study_name
    out.mkdir(parents=True, exist_ok=True)
    table = study.trials_dataframe(attrs=("number", "value", "state", "duration", "params", "user_attrs"))
    table = table.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    table["duration"] = table["duration"].dt.total_seconds().round(1)
    table.to_csv(out / "trials.csv", index=False)
    shown = table[table.state == "COMPLETE"].sort_values("value", ascending=study.direction.name == "MINIMIZE")
    columns = ["number", "value", *(c for c in ("val/acc", "val/f1") if c in table), *(p.key for p in space)]
    print(f"best trials by {settings.metric}:\n{shown[columns].head(int(settings.top)).to_string(index=False)}")

    plots = [plot(optuna.visualization.matplotlib.plot_optimization_history(study), out / "history.png")]
    if len(complete) >= 2 and len(space) > 1:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as err:  # e.g. every complete trial drew the same values
            print(f"no parameter importances: {first_line(err)}")
        else:
            print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
            plot_importances = optuna.visualization.matplotlib.plot_param_importances
            plots.append(plot(plot_importances(study), out / "importances.png"))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(plot(optuna.visualization.matplotlib.plot_intermediate_values(study), out / "epochs.png"))

    best = study.best_trial
    experiment = write_experiment(best, study, cfg, choices, space, out)
    search_path = shlex.quote(f"hydra.searchpath=[{out.resolve().as_uri()}]")
    command = f"python -m music_genre_classification.commands train {search_path} experiment={experiment.stem}"
    print(
        f"best: trial {best.number}, {settings.metric} {best.value:.4f}, "
        + ", ".join(f"{k}={v}" for k, v in best.params.items())
        + f"\nrun directory:   {best.user_attrs.get('run_dir')}\nexperiment:      {experiment}"
        f"\nreproduce it:    {command}\ntable and plots: {out}"
        f"\nto keep it with the project's recipes: cp {shlex.quote(str(experiment))} configs/experiment/"
    )
    tracking.finish([out / "trials.csv", *plots, experiment], {f"best_{settings.metric}": best.value})


def plot(axes, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(9, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_experiment(trial, study: optuna.Study, cfg: DictConfig, choices: dict, space: list[Param], out: Path) -> Path:
    """<out>/experiment/tuned_<study>.yaml: the groups the trial's config picked and every value it changed from
    what those groups give, so that `train hydra.searchpath=[file://<out>] experiment=tuned_<study>` composes the
    trial's config again. Never written into configs/: a study does not overwrite the project's recipes."""
    groups = []  # overrides of train.yaml's groups, each only where the groups before it did not bring it already
    for group in TRAIN_GROUPS:
        now = compose("train", [f"{g}={c}" if c else f"~{g}" for g, c in groups], hydra_config=True)
        if choices.get(group) != now.hydra.runtime.choices.get(group):
            groups.append((group, choices.get(group)))
    plain = compose("train", [f"{g}={c}" if c else f"~{g}" for g, c in groups])
    values = trial_config(cfg, space, {p.key: p.values.get(trial.params[p.key], trial.params[p.key]) for p in space})
    with open_dict(values):
        del values.tune
    changed = difference(OmegaConf.to_container(values), OmegaConf.to_container(plain)) or {}
    changed.pop("run_dir", None)
    path = out / "experiment" / f"tuned_{study.study_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    metric = cfg.tune.metric
    header = [
        "# @package _global_",
        f"# Trial {trial.number} of the Optuna study {study.study_name!r}, the best by {metric} ({trial.value:.4f}),",
        f"# written by `tune`. Reproduce it: train hydra.searchpath=[{out.resolve().as_uri()}] experiment={path.stem}",
        "# or copy this file into configs/experiment/ and: train experiment=" + path.stem,
    ]
    defaults = {"defaults": [{f"override /{g}": c} for g, c in groups]} if groups else {}
    body = OmegaConf.to_yaml(OmegaConf.create({**defaults, **changed}))
    path.write_text("\n".join(header) + "\n" + body)
    return path


def difference(new: object, old: object) -> object:
    """The parts of `new` that differ from `old` (nested dicts), None where they are equal; a key only in `old` is
    set to null, which turns the setting off (e.g. model.grid)."""
    if isinstance(new, dict) and isinstance(old, dict):
        changed = {k: difference(v, old.get(k, object())) for k, v in new.items()}
        changed = {k: v for k, v in changed.items() if v is not None or new[k] is None and old.get(k, 0) is not None}
        changed |= {k: None for k in old if k not in new}
        return changed or None
    return None if new == old else new

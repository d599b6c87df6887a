"""`tune` through the real CLI: Optuna studies in a real sqlite storage, trials as real `train` runs in MLflow."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from helpers.audio import GENRES, write_feature_table
from helpers.processes import REPO, TRAIN_ARGS, run_cli
from omegaconf import OmegaConf
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from music_genre_classification.config import UserError
from music_genre_classification.training.tune import flat, parse_param

GENRES_ARG = f"datamodule.genres=[{','.join(GENRES)}]"
# slow enough (~1-3 s a trial) to be caught mid-trial and to be shared by two processes
FOREST = ["tune=features_rf", GENRES_ARG, "model.pipeline.classifier.n_estimators=800", "tune.heartbeat_s=1"]
FOREST_SPACE = ["~tune.params", "+tune.params={model.pipeline.classifier.min_samples_leaf: 'range(1, 6)'}"]


@pytest.fixture
def study_name(request):
    """A study of its own, whose experiment config goes to its tune folder, never into the project's configs/."""
    name = f"pytest_{request.node.name.removeprefix('test_')[:24]}_{os.getpid()}"
    yield name
    assert not (REPO / "configs" / "experiment" / f"tuned_{name}.yaml").exists()


def load(work, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'outputs' / 'optuna.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def trial_one_has_its_values(work, name: str) -> bool:
    """Trial 1 is running and has drawn its hyperparameters (a kill before that leaves nothing to run again)."""
    try:
        trials = load(work, name).trials
    except Exception:  # no study yet, or its tables are being created by the other process
        return False
    return [t.state.name for t in trials] == ["COMPLETE", "RUNNING"] and bool(trials[1].params)


def mlflow_runs(work, name: str) -> tuple:
    """The study's parent run and its child runs."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("music-genre-classification")
    runs = client.search_runs([experiment.experiment_id], f"tags.`optuna.study` = '{name}'")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def test_features_study_chooses_on_val_and_writes_a_config_that_reproduces_its_best_trial(
    tmp_path, study_name, cli_in_process
):
    table = write_feature_table(tmp_path / "features.csv", clips_per_genre=12)
    args = ["tune=features_logreg", f"datamodule.root={table}", GENRES_ARG, f"tune.study_name={study_name}"]
    elsewhere, project = tmp_path / "elsewhere", {"MGC_PROJECT_DIR": str(tmp_path)}  # run from any directory
    elsewhere.mkdir()
    result = run_cli("tune", *args, "tune.n_trials=3", "tune.metric=val/f1", cwd=elsewhere, env=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    study = load(tmp_path, study_name)
    assert states(study) == ["COMPLETE"] * 3 and study.direction.name == "MAXIMIZE"
    assert study.trials[0].params["model.pipeline.classifier.C"] == 1.0  # trial 0: the config's own value
    assert len({t.params["model.pipeline.classifier.C"] for t in study.trials}) == 3
    for trial in study.trials:  # each an ordinary run: its own directory, config, split and checkpoint
        run_dir = tmp_path / trial.user_attrs["run_dir"]
        assert {"config.yaml", "split.csv", "val_metrics.json"} <= {p.name for p in run_dir.iterdir()}
        saved = json.loads((run_dir / "val_metrics.json").read_text())
        assert saved["val/f1"] == trial.value and saved["chosen"] == {}  # the study's values, not the model's grid
    assert "best trials by val/f1" in result.stdout and "parameter importances: " in result.stdout
    printed = result.stdout + result.stderr  # the command's own lines: no Optuna or MLflow notes
    assert "[I " not in printed and "Creating initial MLflow database tables" not in printed, printed[-3000:]
    out = tmp_path / "outputs" / "tune" / study_name
    assert {"trials.csv", "history.png", "importances.png"} <= {p.name for p in out.iterdir()}
    assert len((out / "trials.csv").read_text().splitlines()) == 4

    client, parent, children = mlflow_runs(tmp_path, study_name)
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert parent.data.params["space/model.pipeline.classifier.C"] == "tag(log, interval(1e-4, 100))"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"history.png", "importances.png", "trials.csv", f"tuned_{study_name}.yaml"} <= logged

    (command,) = [shlex.split(line.split(":", 1)[1]) for line in result.stdout.splitlines() if "reproduce it:" in line]
    assert command[:4] == ["python", "-m", "music_genre_classification.commands", "train"]
    experiment = out / "experiment" / f"tuned_{study_name}.yaml"
    assert (
        command[4:] == [f"hydra.searchpath=[file://{out}]", f"experiment=tuned_{study_name}"] and experiment.is_file()
    )
    again = cli_in_process(*command[3:], cwd=elsewhere, env=project)  # as printed, from the same folder
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(elsewhere.iterdir())  # the stores (optuna.db, mlflow.db, mlruns/) are in the project's outputs
    assert {"optuna.db", "mlflow.db", "mlruns"} <= {p.name for p in (tmp_path / "outputs").iterdir()}
    run_dir = (tmp_path / "outputs" / "model_full.ckpt").resolve().parent.parent
    assert json.loads((run_dir / "val_metrics.json").read_text())["val/f1"] == pytest.approx(study.best_value)

    other = cli_in_process("tune", *args, "split.seed=7", "tune.metric=val/f1", cwd=tmp_path)  # another setting
    assert other.returncode == 1, other.stderr[-3000:]
    assert other.stderr.splitlines()[-1].startswith(f"error: study '{study_name}' was run with overrides [")


def test_a_bad_search_space_is_one_line_before_any_trial(tmp_path, cli_in_process):
    space = "{model.pipeline.nope: 'interval(0, 1)'}"
    result = cli_in_process("tune", "tune=features_logreg", "~tune.params", f"+tune.params={space}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr == "error: tune.params.model.pipeline.nope: no such key in the config (a leading + adds one)\n"
    assert not list(tmp_path.iterdir())  # nothing written: no store, no outputs
    for spec in ("between(1, 2)", "interval(2, 1)", "range(0.5, 2)", "tag(log, choice(1, 2))", "3", "[1, 2]"):
        with pytest.raises(UserError, match=r"^tune.params.model.lr: cannot read|is not a search distribution"):
            parse_param("model.lr", spec)
    assert flat(OmegaConf.create({"model": {"lr": "a", "net": {"dropout": "b"}}})) == {
        "model.lr": "a",
        "model.net.dropout": "b",
    }
    assert parse_param("+x", "range(8, 32, 8)").add and parse_param("x", "choice([256], [512, 256])").values == {
        "[256]": [256],
        "[512, 256]": [512, 256],
    }


def test_cnn_study_prunes_a_hopeless_trial_from_its_epochs(synthetic_gtzan, tmp_path, study_name, cli_in_process):
    args = [a for a in TRAIN_ARGS if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]
    space = [
        "~tune.params",
        "+tune.params={model.optimizer.lr: 'choice(0.01, 0.000001)'}",
    ]  # TRAIN_ARGS' lr, or nothing learnt
    prune = ["tune.pruner.n_startup_trials=1", "tune.pruner.n_warmup_steps=0"]  # after one epoch, if worse than median
    result = cli_in_process(
        "tune",
        "tune=cnn",
        f"datamodule.root={synthetic_gtzan}",
        *args,
        *space,
        *prune,
        "tune.n_trials=2",
        f"tune.study_name={study_name}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    study = load(tmp_path, study_name)
    assert states(study) == ["COMPLETE", "PRUNED"]  # trial 0 is TRAIN_ARGS' lr; the seeded sampler then draws 1e-6
    assert [t.params["model.optimizer.lr"] for t in study.trials] == [0.01, 0.000001]
    assert study.trials[1].intermediate_values[0] > study.trials[0].intermediate_values[0]
    assert list(study.trials[0].intermediate_values) == [0]  # its epochs only
    assert (tmp_path / "outputs" / "tune" / study_name / "epochs.png").is_file()
    _, _, children = mlflow_runs(tmp_path, study_name)
    assert {c.data.tags["optuna.trial"]: c.info.status for c in children} == {"0": "FINISHED", "1": "KILLED"}
    search_path = f"'hydra.searchpath=[file://{tmp_path / 'outputs' / 'tune' / study_name}]'"  # quoted for a shell
    assert (
        f"reproduce it:    python -m music_genre_classification.commands train {search_path} "
        f"experiment=tuned_{study_name}" in result.stdout
    )


def tune_process(cwd, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MGC_PROJECT_DIR": str(cwd)}
    command = [sys.executable, "-m", "music_genre_classification.commands", "tune", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_study_resumes_with_the_same_command_and_runs_the_killed_trial_again(
    tmp_path, study_name, cli_in_process
):
    table = write_feature_table(tmp_path / "features.csv", clips_per_genre=12)
    args = [*FOREST, *FOREST_SPACE, f"datamodule.root={table}", f"tune.study_name={study_name}", "tune.n_trials=2"]
    process = tune_process(tmp_path, *args)
    deadline = time.monotonic() + 300
    while True:  # SIGKILL in the middle of trial 1: nothing of the process can clean up
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
        if (tmp_path / "outputs" / "optuna.db").exists() and trial_one_has_its_values(tmp_path, study_name):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert states(load(tmp_path, study_name)) == ["COMPLETE", "RUNNING"]  # left behind, as a crash leaves it

    result = cli_in_process("tune", *args, cwd=tmp_path)  # the same command
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load(tmp_path, study_name)
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    assert states(study) == ["COMPLETE", "FAIL", "COMPLETE"] and len(finished) == 2
    (again,) = [t for t in finished if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 1]
    assert again.params == study.trials[1].params  # the killed trial, run again with its values


def test_two_processes_share_one_study_without_clashing_or_losing_trials(tmp_path, study_name):
    table = write_feature_table(tmp_path / "features.csv", clips_per_genre=12)
    args = [*FOREST, *FOREST_SPACE, f"datamodule.root={table}", f"tune.study_name={study_name}", "tune.n_trials=4"]
    processes = [tune_process(tmp_path, *args) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    study = load(tmp_path, study_name)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len({t.number for t in study.trials}) == len(study.trials)
    # a process that began a trial when the other had just begun the last one stops it before it trains
    assert all(t.state.name == "FAIL" and t.user_attrs["surplus"] for t in study.trials if t not in complete)
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both processes ran trials
    assert len({t.user_attrs["run_dir"] for t in complete}) == 4  # and never into the same run directory
    _, _, children = mlflow_runs(tmp_path, study_name)  # one parent run for both processes
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == sorted(t.number for t in complete)

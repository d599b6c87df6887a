"""The real commands in their own processes, as a user runs them: the CLI, `serve` on a free 127.0.0.1 port, the bot
long polling a fake Bot API; the CLI's main() in this process; and a folder in which this process has no more rights
than an ordinary user."""

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx

from helpers.audio import GENRES

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
# small and fast: a tiny CNN on 32-column crops of short clips (CLIP_S), on the CPU
TRAIN_ARGS = [
    f"datamodule.genres=[{','.join(GENRES)}]",
    "datamodule.crop_columns=32",
    "datamodule.batch_size=8",
    "datamodule.crops_per_clip=8",
    "model.net.channels=[8,16,16,32]",
    "model.eval_hop=16",
    "model.optimizer.lr=0.01",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=12",  # with 8, the model trained on CLIP_S-long clips took a "high" test clip for "mid"
    "+trainer.enable_progress_bar=false",
]


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line, in its own process, as a user runs it; its project folder (outputs/, .cache/) is `cwd`
    rather than this checkout's, unless `env` sets MGC_PROJECT_DIR (to "": the checkout's, as for a user)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "MGC_PROJECT_DIR": str(cwd), **(env or {})}
    command = [sys.executable, "-m", "music_genre_classification.commands", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def run_in_process(*args: object, cwd: Path, env: dict | None = None, capfd=None) -> subprocess.CompletedProcess:
    """`run_cli` in this process: `music-genre ARGS` through the CLI's own main() and sys.argv, with the working
    directory, MGC_PROJECT_DIR and `env` that `run_cli` sets, and the same result. It spares a new process's imports
    (Lightning, Hydra, MLflow: seconds each), so the tests run most commands this way, and keep a real process
    (`run_cli`) per command for the entry point itself. Output is captured at the file descriptors with pytest's
    `capfd`, else at sys.stdout and sys.stderr. An exception that escapes main() is what Python prints for it: a
    traceback on stderr, exit code 1."""
    import pytest
    import torch

    from music_genre_classification import commands, config

    environment, threads = dict(os.environ), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        # main() moves the process's descriptor 2 to a pipe that drops the MP3 decoder's notes: not in pytest's process
        patch.setattr(config, "drop_decoder_notes", lambda: None)
        patch.chdir(cwd)
        patch.setattr(sys, "argv", ["music-genre", *map(str, args)])
        for key, value in {"MGC_PROJECT_DIR": str(cwd), **(env or {})}.items():
            patch.setenv(key, value)
        if capfd is not None:
            capfd.readouterr()
        else:
            patch.setattr(sys, "stdout", out)
            patch.setattr(sys, "stderr", err)
        code = 0
        try:
            commands.main()
        except SystemExit as exit:
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        except Exception:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = capfd.readouterr() if capfd is not None else (out.getvalue(), err.getvalue())
    os.environ.clear()
    os.environ.update(environment)  # what a command set for its process alone (MLflow's log level, its threads)
    torch.set_num_threads(threads)
    return subprocess.CompletedProcess([str(a) for a in args], code, stdout, stderr)


class Server:
    """The real `serve` command in its own process on a free 127.0.0.1 port; its log and TMPDIR under `folder`."""

    def __init__(self, folder: Path, *args: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp, self.log = folder / "tmp", folder / "server.log"
        self.tmp.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmp)}
        command = [
            sys.executable,
            "-m",
            "music_genre_classification.commands",
            "serve",
            *args,
            "--port",
            str(self.port),
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, workers: int = 1, timeout: float = 120) -> None:
        """Until each worker has logged that its models are loaded."""
        deadline = time.monotonic() + timeout
        while self.log_text().count("ready: ") < workers:
            assert self.process.poll() is None, self.log_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not get ready:\n" + self.log_text()[-3000:]
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text()

    def uploads(self) -> list[Path]:
        """Files in the server's upload folders."""
        return [p for folder in self.tmp.glob("genre-serve-*") for p in folder.iterdir()]

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def wait_for_port(url: str, timeout: float = 60) -> httpx.Response:
    """The first answer of GET {url}/health, polling fast while the port is not open yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"{url}/health", timeout=10)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"nothing answers on {url}"
            time.sleep(0.02)


@contextlib.contextmanager
def bot_process(checkpoint: Path, tmp: Path, *args: str):
    """`commands bot` in its own process, long polling a fake Bot API on 127.0.0.1, its temporary files in `tmp`."""
    from helpers.fake_telegram import TOKEN, FakeBotAPI

    with FakeBotAPI() as api:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "TELEGRAM_BOT_TOKEN": TOKEN}
        command = [sys.executable, "-m", "music_genre_classification.commands", "bot", str(checkpoint)]
        command += ["--base_url", api.base_url, *args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            api.wait_for(lambda: "setMyCommands" in api.methods() or process.poll() is not None, timeout=120)
            assert process.poll() is None, process.stdout.read()
            yield api
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]


@contextlib.contextmanager
def without_rights():
    """A folder open to all, in which this process has for a while no more rights than an ordinary user: root (as
    here and in CI) can read and write anything, so it becomes `nobody` until the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="mgc-rights-"))
    folder.chmod(0o777)
    root = os.geteuid() == 0
    try:
        if root:
            os.setegid(65534)
            os.seteuid(65534)
        yield folder
    finally:
        if root:
            os.seteuid(0)
            os.setegid(0)
        shutil.rmtree(folder)

"""Load benchmark of `serve`: python -m studies.load_benchmark --model_path X.ckpt

`clients` clients send `requests` uploads each of whole 30-s clips to a server on 127.0.0.1, all at once, within
`time_limit_s`; it prints requests/s, p50/p95 latency, errors and the server's peak memory, beside `infer` on a
folder of the same clips (predict_many) in the same run. The server is the real `serve` command, or any server
with the same POST /predict (--url, with --server_pid for its memory).
"""

import contextlib
import gc
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import fire
import httpx
import numpy as np
import psutil

from music_genre_classification.models.classifier import GenreClassifier
from studies.benchmark import whole_clips
from studies.results import Results


def folder_rate(model_path: str, files: list[Path]) -> tuple[float, float]:
    """Clips/s and CPU seconds per clip of `infer` on a folder: predict_many, batches of 16, decoding in threads."""
    classifier = GenreClassifier.from_checkpoint(model_path, device="cpu")
    classifier.predict(files[0])  # warm up
    start, cpu = time.perf_counter(), time.process_time()
    list(classifier.predict_many(files, batch_size=16))
    return len(files) / (time.perf_counter() - start), (time.process_time() - cpu) / len(files)


def multipart(path: Path) -> tuple[bytes, str]:
    """A clip as a ready multipart body, so that the clients spend no time encoding."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'
    return head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


class ServerUsage(threading.Thread):
    """A server's processes together: the largest resident memory (sampled every 50 ms) and the CPU time used.

    CPU seconds per request hardly depend on what else runs on the machine, unlike requests/s.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(pid), 0, True

    def tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):  # a process ended between listing and reading
                total += sum(process.cpu_times()[:2])  # user + system
        return total

    def run(self) -> None:
        while self.running:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, sum(p.memory_info().rss for p in self.tree()))
            time.sleep(0.05)


def load(url: str, bodies: list[tuple[bytes, str]], clients: int, requests: int, deadline: float) -> dict:
    """Every client sends its requests one after another, all clients at once; latencies in seconds."""
    latencies, errors, start = [], [], threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            start.wait()
            for r in range(requests):
                if time.monotonic() > deadline:
                    return
                body, boundary = bodies[(c * requests + r) % len(bodies)]
                headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
                sent = time.perf_counter()
                try:
                    response = http.post("/predict", content=body, headers=headers)
                    ok = response.status_code == 200 and "genre" in response.json()
                    (latencies if ok else errors).append(time.perf_counter() - sent)
                    if not ok:
                        print(f"  error {response.status_code}: {response.text[:200]}", file=sys.stderr)
                except httpx.HTTPError as err:
                    errors.append(time.perf_counter() - sent)
                    print(f"  error: {err!r}", file=sys.stderr)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"seconds": time.perf_counter() - began, "latencies": latencies, "errors": len(errors)}


def start_server(model_path: str, workers: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "music_genre_classification.commands", "serve", "--model_path", model_path]
    command += ["--port", str(port), "--workers", str(workers), "--max_batch", str(max_batch)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f"http://127.0.0.1:{port}"


def wait_ready(url: str, timeout: float = 120, answers: int = 20) -> None:
    """Until `answers` health checks in a row say ready: with several workers, each must have loaded."""
    deadline, ready = time.monotonic() + timeout, 0
    while ready < answers:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {url} did not get ready in {timeout:.0f} s")
        try:
            ready = ready + 1 if httpx.get(f"{url}/health", timeout=5).status_code == 200 else 0
        except httpx.TransportError:
            ready = 0
        time.sleep(0.05)


def main(
    model_path: str = "outputs/model_full.ckpt",
    audio_dir: str = "data/dataset/genres_original",
    clips: int = 32,
    clients: int = 16,
    requests: int = 4,
    workers: int = 1,
    max_batch: int = 16,
    time_limit_s: float = 300,
    url: str | None = None,
    server_pid: int | None = None,
    output: str | None = None,
):
    with Results(output, "load_benchmark"):
        files = whole_clips(audio_dir, clips)
        before, folder_cpu = folder_rate(model_path, files)
        gc.collect()
        bodies = [multipart(p) for p in files]
        server, usage = None, None
        if url is None:
            server, url = start_server(model_path, workers, max_batch)
            server_pid = server.pid
        try:
            wait_ready(url)
            warm = load(url, bodies, clients, 1, time.monotonic() + time_limit_s)  # every worker warm and loaded
            if warm["errors"]:
                raise SystemExit(f"error: {warm['errors']} errors while warming up")
            if server_pid:
                usage = ServerUsage(server_pid)
                usage.start()
                cpu = usage.cpu_seconds()
            result = load(url, bodies, clients, requests, time.monotonic() + time_limit_s)
            if usage:
                server_cpu = (usage.cpu_seconds() - cpu) / max(len(result["latencies"]), 1)
        finally:
            if usage:
                usage.running = False
            if server:
                server.terminate()
                server.wait(60)
        after, _ = folder_rate(model_path, files)  # before and after: the machine's load may change meanwhile
        folder, done = (before + after) / 2, len(result["latencies"])
        rate = done / result["seconds"]
        p50, p95 = np.percentile(result["latencies"], [50, 95]) * 1000 if done else (float("nan"),) * 2
        print(f"clips: {len(files)} whole 30-s clips from {audio_dir}")
        print(
            f"infer on a folder of them (predict_many): {before:.1f} clips/s before the server run, {after:.1f} after"
        )
        where = url + (f", {workers} worker(s), max_batch {max_batch}" if server else "")
        print(f"serve ({where}): {clients} clients x {requests} requests of one clip each, all at once")
        print(
            f"  {rate:.1f} requests/s ({rate / folder:.0%} of the folder rate), "
            f"{done} done in {result['seconds']:.1f} s"
        )
        print(f"  latency p50 {p50:.0f} ms, p95 {p95:.0f} ms; errors: {result['errors']}")
        if usage:
            print(f"  server peak memory: {usage.peak / 2**20:.0f} MB (all its processes)")
            ms = f"{server_cpu * 1000:.0f} ms; the folder's per clip: {folder_cpu * 1000:.0f} ms"
            print(f"  server CPU time per request: {ms} (robust to other load on the machine, unlike requests/s)")


if __name__ == "__main__":
    fire.Fire(main)

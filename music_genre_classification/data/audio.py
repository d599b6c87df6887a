"""Reading audio files as mono float32 waveforms at the model's sample rate: only samples really decoded, ever."""

import math
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm")
SOUNDFILE_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")
MIN_DURATION_S = 8.0  # shorter audio is refused: python -m studies.clip_length
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this a clip carries no music to classify
MAX_PEAK = 1e6  # float audio lies within +-1; far beyond, the power spectrum overflows float32
RATE_RANGE = (4000, 768000)  # Hz; outside it a file is damaged or not music (and resampling it costs absurd memory)
READ_BYTES = 8 * 2**20  # soundfile reads at most this much at a time, however many channels a file has
NOT_AUDIO = {  # the first bytes of files that are often renamed to .mp3 or sent by mistake
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x7fELF": "a program",
}


class AudioError(ValueError):
    """A file or waveform that cannot be classified; the message is one line meant for the user."""


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


class DecodedAudio:
    """A file as mono float32 blocks of about `block_s` at `sample_rate`, read when iterated: soundfile, else ffmpeg.

    Block by block, so that a track of many hours never sits in memory whole at its own rate and channel count.
    Only samples really decoded are given: a cut-off download yields what is there, not what its header promises.
    Once the blocks are all read, `duration_s` is what was decoded and `warning` says when the file ended before its
    header said (cut off or damaged); if less than `min_s` is left of such a file it is an AudioError.
    """

    def __init__(
        self, path: str | Path, sample_rate: int = 22050, block_s: float = 30.0, min_s: float = MIN_DURATION_S
    ):
        self.path, self.sample_rate, self.block_s, self.min_s = Path(path), sample_rate, block_s, min_s
        self.duration_s, self.warning = 0.0, None
        self._announced_s, self._cut_ogg = None, False  # what soundfile found in the header

    def __iter__(self) -> Iterator[np.ndarray]:
        head = check_file(self.path)
        failure, decoded, self.warning = None, 0, None
        try:
            for block in self._soundfile_blocks():
                decoded += len(block)
                yield block
        except _NeedsFfmpeg:
            failure = None
            yield from self._ffmpeg_blocks()
            return
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            failure = err
        if failure is None or decoded:
            self._finish(decoded, self._announced_s, failure)
            return
        if shutil.which("ffmpeg") is None:
            if self.path.suffix.lower() in SOUNDFILE_EXTENSIONS:
                raise AudioError(f"{self.path}: not a readable audio file ({_soundfile_reason(failure, head)})")
            raise AudioError(f"{self.path}: {self.path.suffix or 'this'} files need ffmpeg, which is not installed")
        yield from self._ffmpeg_blocks()

    def _soundfile_blocks(self) -> Iterator[np.ndarray]:
        with sf.SoundFile(self.path) as f:
            if f.format == "RAW":  # libsndfile's guess for a .au without its header: any bytes "decode" as noise
                raise AudioError(f"{self.path}: not a readable audio file (no header: unknown format or damaged data)")
            rate = check_rate(f.samplerate, self.path)
            if shutil.which("ffmpeg") and (
                (f.format in ("MP3", "MPEG") and not _mp3_length_known(self.path))
                or (f.format == "OGG" and _chained_ogg(self.path))
            ):
                # libsndfile stops at the length it estimates from the first MP3 frame (a VBR file without a Xing
                # header: 17 of 30 s) or at the end of the first of chained Ogg streams; ffmpeg decodes all there is
                raise _NeedsFfmpeg
            self._announced_s = _announced_s(f)
            self._cut_ogg = f.format == "OGG" and "lacks an end-of-stream" in f.extra_info
            # whole seconds per block, so that resampling each block gives exactly block_s * sample_rate samples
            block, step = round(self.block_s) * rate, max(1, min(rate, READ_BYTES // (4 * f.channels)))
            pending, count = [], 0
            while True:
                chunk = f.read(step, dtype="float32", always_2d=True)
                pending.append(chunk.mean(axis=1) if chunk.shape[1] > 1 else chunk[:, 0])  # mono at once
                count += len(chunk)
                end = len(chunk) < step  # fewer frames than asked: the file ends here
                while count >= block or (end and count):
                    wave = np.concatenate(pending)
                    yield resample(wave[:block], rate, self.sample_rate)
                    pending = [wave[block:]]
                    count = len(pending[0])
                if end:
                    return

    def _finish(self, decoded: int, announced_s: float | None, failure: Exception | None) -> None:
        self.duration_s = decoded / self.sample_rate
        got = f"{self.duration_s:.1f} s"
        if failure is not None:
            self.warning = f"{self.path}: decoding failed after {got} ({_reason(failure)}); damaged or cut off."
        elif announced_s and self.duration_s < announced_s - max(0.5, 0.01 * announced_s):
            self.warning = f"{self.path}: ends after {got} of the {announced_s:.1f} s its header announces; cut off?"
        elif self._cut_ogg:
            self.warning = f"{self.path}: ends abruptly after {got} (its last Ogg page is cut off); cut off?"
        if self.warning and self.duration_s < self.min_s:
            raise AudioError(f"{self.warning.rstrip('?.')}: too little audio left to classify")
        if self.warning:
            self.warning += f" Only those {got} are classified."

    def _ffmpeg_blocks(self) -> Iterator[np.ndarray]:
        # file: stops ffmpeg from reading a name like "concat:a|b" or "pipe:0" as a protocol; level+ tags the log lines
        command = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
        command += ["-i", f"file:{self.path}"]
        command += ["-map", "0:a:0", "-f", "f32le", "-ac", "1", "-ar", str(self.sample_rate), "-"]
        block_bytes = 4 * round(self.block_s * self.sample_rate)
        # stderr goes to a file: a pipe nobody reads could fill up with a damaged file's messages and stall ffmpeg
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
            decoded = 0
            try:
                while chunk := process.stdout.read(block_bytes):
                    wave = np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype=np.float32).copy()
                    decoded += len(wave)
                    yield wave
            finally:  # also when the consumer stops early: no ffmpeg is left behind
                process.stdout.close()
                if process.poll() is None:
                    process.kill()
                process.wait()
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
        reason = _ffmpeg_reason(lines, self.path)
        if not decoded:
            raise AudioError(f"{self.path}: not a readable audio file ({reason})")
        duration = next((m for line in lines if (m := re.search(r"Duration: (\d+):(\d\d):(\d\d\.\d+)", line))), None)
        if any("Estimating duration from bitrate" in line for line in lines):  # a guess, not what the file holds
            duration = None
        announced = int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else None
        self._finish(decoded, announced, RuntimeError(reason) if process.returncode else None)


class _NeedsFfmpeg(Exception):
    """libsndfile would stop before the end of this file: decode it with ffmpeg."""


def _mp3_length_known(path: Path) -> bool:
    """The first MP3 frame holds a Xing/Info or VBRI header (the stream's frame count), after any ID3v2 tag."""
    with open(path, "rb") as file:
        head, offset = file.read(10), 0
        if head[:3] == b"ID3" and len(head) == 10:
            offset = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + 10 * bool(head[5] & 0x10)
        file.seek(offset)
        frame = file.read(4096).lstrip(b"\0")
    return any(tag in frame[:200] for tag in (b"Xing", b"Info", b"VBRI"))


def _chained_ogg(path: Path) -> bool:
    """An Ogg file of streams one after another: a beginning-of-stream page after a page that is not one."""
    seen_other, tail = False, b""
    with open(path, "rb") as file:
        while chunk := file.read(READ_BYTES):
            data, start = tail + chunk, 0
            while (at := data.find(b"OggS\0", start)) >= 0 and at + 6 <= len(data):
                bos = data[at + 5] & 0x02
                if bos and seen_other:
                    return True
                seen_other |= not bos
                start = at + 1
            tail = data[-5:]
    return False


def decode_blocks(
    path: str | Path, sample_rate: int = 22050, block_s: float = 30.0, min_s: float = MIN_DURATION_S
) -> DecodedAudio:
    """The blocks of a file (see DecodedAudio): `for block in decode_blocks(path): ...`."""
    return DecodedAudio(path, sample_rate, block_s, min_s)


def load_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """A whole file as one mono waveform at `sample_rate`."""
    blocks = list(decode_blocks(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def check_file(path: Path) -> bytes:
    """The first bytes of a regular, readable, non-empty file that may hold audio, or a one-line AudioError."""
    if "\0" in str(path):
        raise AudioError(f"{str(path)!r}: a path cannot hold a NUL character")
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise AudioError(f"{path}: is a folder, not an audio file")
        if not stat.S_ISREG(info.st_mode):
            raise AudioError(f"{path}: not a regular file (a pipe, device or socket); give an audio file")
        if info.st_size == 0:
            raise AudioError(f"{path}: empty file")
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file" + (" (a broken link)" if path.is_symlink() else "")) from None
    except OSError as err:  # permission denied, a symlink loop, a name too long, an I/O error
        raise AudioError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    if kind := not_audio(head):
        raise AudioError(f"{path}: is {kind}, not audio")
    if not audio_signature(head):  # before a decoder starts: random bytes named .mp3 cost an ffmpeg each
        raise AudioError(f"{path}: not a readable audio file (its first bytes are those of no audio format)")
    return head


def not_audio(head: bytes) -> str | None:
    """What a file surely is when its first bytes say it is no audio ("a PNG image", "a text file"), else None."""
    kind = next((kind for magic, kind in NOT_AUDIO.items() if head.startswith(magic)), None)
    return kind or ("a text file" if _is_text(head) else None)


AUDIO_MAGIC = (b"RIFF", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b"ID3", b".snd", b"caff", b"\x1aE\xdf\xa3")
ASF_MAGIC = bytes.fromhex("3026b2758e66cf11")  # .wma


def audio_signature(head: bytes) -> bool:
    """The first bytes are those of an audio file of a format this project reads: a container's magic, an MP4's
    ftyp box, or an MPEG audio frame (MP3, AAC) right at the start (after any zero padding)."""
    if head[4:8] == b"ftyp":  # before stripping: an MP4 box size starts with zero bytes
        return True
    head = head.lstrip(b"\0")
    if head.startswith(AUDIO_MAGIC + (ASF_MAGIC,)) or head[4:8] == b"ftyp":
        return True
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    if layer == 0:  # ADTS (AAC): its own header
        return head[1] & 0xF6 == 0xF0
    return version != 1 and head[2] >> 4 != 0xF and (head[2] >> 2) & 3 != 3  # not reserved: a real MPEG frame


def check_rate(rate: int, name: object) -> int:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise AudioError(f"{name}: sample rate {rate} Hz is outside {RATE_RANGE[0]}-{RATE_RANGE[1]} Hz; not music")
    return int(rate)


def waveform(array: np.ndarray, sample_rate: int | None, to_rate: int) -> np.ndarray:
    """An array given in Python, [samples], [samples, channels] or [channels, samples], as mono float32 at `to_rate`."""
    whole = isinstance(sample_rate, int | float | np.number) and float(sample_rate).is_integer()
    if isinstance(sample_rate, bool) or not whole:
        raise AudioError(f"waveform: needs its sample rate, as in predict(wave, sample_rate=44100); got {sample_rate}")
    wave = np.asarray(array)
    if wave.dtype.kind in "iu":  # integer PCM, e.g. from scipy.io.wavfile: scaled to [-1, 1)
        info = np.iinfo(wave.dtype)
        middle, half = (0 if info.min < 0 else (int(info.max) + 1) // 2), (int(info.max) - int(info.min) + 1) // 2
        wave = (wave.astype(np.float64) - middle) / half
    elif wave.dtype.kind != "f":
        raise AudioError(f"waveform: samples must be numbers, not {wave.dtype}")
    if wave.ndim == 2 and min(wave.shape) <= 16:  # the short axis holds the channels, whichever it is
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1:
        raise AudioError(f"waveform: expected [samples] or [samples, channels], got shape {list(np.shape(array))}")
    return resample(wave, check_rate(int(sample_rate), "waveform"), to_rate)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels) as soundfile gives it
        wave = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)
    if from_rate == to_rate:
        return wave
    gcd = math.gcd(from_rate, to_rate)
    if (from_rate // gcd) * (to_rate // gcd) > 10**6:
        # e.g. 44101 Hz: the exact polyphase kernel would take ~16 GB; the nearest 50 Hz is off by < 0.1% in pitch
        from_rate = round(from_rate / 50) * 50
    return AF.resample(torch.from_numpy(wave), int(from_rate), int(to_rate)).numpy()


def _announced_s(f: sf.SoundFile) -> float:
    """Seconds the header promises. libsndfile trims a WAV or AIFF cut short to what is there, but logs the header's
    data size: "data : 2646000 (should be 881970)"."""
    found = re.search(r"^(?:data|SSND)\s*: (\d+) \(should be (\d+)\)", f.extra_info, re.M)
    if found and 0 < int(found[1]) < 0xFFFFFFF0:  # 0 and 0xFFFFFFFF stand for "unknown"
        per_second = re.search(r"Bytes/sec\s*: (\d+)", f.extra_info)
        if per_second and int(per_second[1]):
            return int(found[1]) / int(per_second[1])
        if int(found[2]):
            return f.frames * int(found[1]) / int(found[2]) / f.samplerate
    return f.frames / f.samplerate


def _is_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="ignore")
    cut_char = len(head) - len(text.encode()) <= 3  # 64 bytes may end inside a character, no more
    return bool(text) and cut_char and all(c.isprintable() or c in "\t\r\n" for c in text)


def _soundfile_reason(err: Exception, head: bytes) -> str:
    # libsndfile says "File does not exist or is not a regular file (possibly a pipe?)" for any unknown format
    if "possibly a pipe" in str(err) or "Format not recognised" in str(err):
        return "unknown format or damaged data" + (" (an MP3 tag but no readable frames)" if head[:3] == b"ID3" else "")
    return _reason(err)


FFMPEG_REASONS = {  # ffmpeg's words for the common failures, and what they mean to a user
    "matches no streams": "no audio stream",
    "moov atom not found": "its index (moov atom) is missing: cut off or damaged",
    "Invalid argument": "unknown format or damaged data",
    "Invalid data found when processing input": "unknown format or damaged data",
}


def _ffmpeg_reason(lines: list[str], path: Path) -> str:
    """The first error ffmpeg logged ("[mp3 @ 0x55] [error] ..."), in words for the user."""
    errors = [re.sub(r"^(\[[^\]]+\] )+", "", line).strip() for line in lines if re.search(r"\[(error|fatal)\]", line)]
    errors = [e.removeprefix(f"file:{path}: ").removeprefix(f"{path}: ") for e in errors]
    reason = errors[0] if errors else "no audio stream"
    return next((words for key, words in FFMPEG_REASONS.items() if key in " ".join(errors)), reason)


def _reason(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip().removeprefix("Error : ") if lines else type(err).__name__

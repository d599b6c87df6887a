"""Uploads for the HTTP API: one multipart field streamed to a temporary file under a size limit, then sniffed.

The body is parsed as it arrives (python-multipart), so an upload never sits in memory whole and a too-big one is
refused as soon as it passes the limit.
"""

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from music_genre_classification.data.audio import not_audio

MULTIPART_OVERHEAD = 64 * 1024  # room for the boundaries, part headers and small fields beside the file
# a refused body is still read (and dropped) up to this many times the limit, so that a plain client that sends its
# whole body before reading the answer gets the 413 instead of "connection reset"; beyond it the connection is closed
DRAIN_FACTOR = 4
# ISO base media files that are images, not audio (HEIC/HEIF, AVIF): an ftyp box like m4a's, with an image brand
IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def too_big(max_mb: float) -> ApiError:
    return ApiError(413, f"the upload is larger than the limit of {max_mb:g} MB")


@dataclass
class Upload:
    path: Path  # the temporary file holding the field's bytes, named with the sniffed format's extension
    filename: str  # the client's name for it, without folders


def audio_format(head: bytes) -> str | None:
    """The extension of the audio format whose signature starts `head`, or None when it is no audio we read."""
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return ".aiff"
    if head[4:8] == b"ftyp" and head[8:12] in IMAGE_BRANDS:
        return None
    if head[4:8] == b"ftyp":  # MP4 family: m4a, mp4, 3gp (Safari records in it)
        return ".m4a"
    signatures = {
        b"fLaC": ".flac",
        b"OggS": ".ogg",  # vorbis, opus
        b"ID3": ".mp3",
        b".snd": ".au",
        b"ADIF": ".aac",
        b"\x1a\x45\xdf\xa3": ".webm",  # Matroska/WebM: what Chrome and Firefox record
        b"\x30\x26\xb2\x75\x8e\x66\xcf\x11": ".wma",  # ASF
    }
    for signature, suffix in signatures.items():
        if head.startswith(signature):
            return suffix
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame without ID3 tag
        return ".aac" if head[1] & 0x06 == 0 else ".mp3"  # layer bits 00: an ADTS (AAC) frame
    return None


class _FieldWriter:
    """python-multipart callbacks that write the first part named `field` to `file`, up to `max_bytes`."""

    def __init__(self, field: str, file, max_bytes: int, max_mb: float):
        self.field, self.file, self.max_bytes, self.max_mb = field.encode(), file, max_bytes, max_mb
        self.header_name, self.headers, self.writing = b"", {}, False
        self.found, self.filename, self.size = False, "", 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: setattr(self, "header_name", data[start:end].lower()),
            "on_header_value": self.on_header_value,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
        }

    def on_part_begin(self) -> None:
        self.headers, self.writing = {}, False

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.headers[self.header_name] = self.headers.get(self.header_name, b"") + data[start:end]

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if options.get(b"name") == self.field and self.found:  # which one is the audio? never guess
            raise ApiError(422, f"the form has more than one field '{self.field.decode()}': send one file per request")
        self.writing = options.get(b"name") == self.field
        if self.writing:
            self.found = True
            name = options.get(b"filename", b"upload").decode(errors="replace")
            self.filename = name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.writing:
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_big(self.max_mb)
            self.file.write(data[start:end])


async def _drain(request: Request, max_bytes: int) -> None:
    """Read and drop a refused body (up to DRAIN_FACTOR times the limit) before answering."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > DRAIN_FACTOR * max_bytes:
                return
    except ClientDisconnect:
        return


async def stream_until_idle(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; a client that sends nothing for `idle_s` seconds is answered 408, so that slow or stalled
    uploads cannot hold the server's connections open."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(408, f"the upload stalled: nothing arrived for {idle_s:g} s") from None
        yield chunk


@asynccontextmanager
async def receive_file(
    request: Request, field: str, folder: Path, max_mb: float, idle_s: float = 20.0
) -> AsyncIterator[Upload]:
    """Stream the multipart `field` of `request` into a file in `folder`; the file is removed on leaving; a client
    silent for `idle_s` seconds mid-body gets 408."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(422, f"send the audio as multipart/form-data, in the field '{field}'")
    max_bytes = int(max_mb * 2**20)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:  # refused before storing a byte
        await _drain(request, max_bytes)
        raise too_big(max_mb)
    handle, name = tempfile.mkstemp(prefix="upload-", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            writer = _FieldWriter(field, file, max_bytes, max_mb)
            parser = MultipartParser(options[b"boundary"], writer.callbacks())
            received, refused = 0, None
            try:
                async for chunk in stream_until_idle(request, idle_s):
                    received += len(chunk)
                    if refused is not None:  # read on and drop, so that the client can read the answer
                        if received > DRAIN_FACTOR * max_bytes:
                            break
                        continue
                    if received > max_bytes + MULTIPART_OVERHEAD:  # a body of many other fields counts too
                        refused = too_big(max_mb)
                        continue
                    try:
                        parser.write(chunk)
                    except ApiError as err:
                        refused = err
                if refused is not None:
                    raise refused
                parser.finalize()
            except ClientDisconnect:
                raise ApiError(400, "the upload was interrupted") from None
            except MultipartParseError as err:
                raise ApiError(400, f"malformed multipart body ({err})") from None
        if not writer.found:
            raise ApiError(422, f"the form has no field '{field}': send the audio file in it")
        if writer.size == 0:
            raise ApiError(400, f"{writer.filename}: empty file")
        with open(path, "rb") as file:
            head = file.read(64)
        if (suffix := audio_format(head)) is None:
            kind = f"is {not_audio(head)}" if not_audio(head) else "not an audio file"
            if head[4:8] == b"ftyp" and head[8:12] in IMAGE_BRANDS:
                kind = "is a HEIF image (HEIC/AVIF)"
            raise ApiError(415, f"{writer.filename}: {kind} (send wav, mp3, ogg/opus, flac, m4a, ...)")
        named = path.with_name(path.name + suffix)  # the extension lets the decoder pick ffmpeg for m4a and the like
        path = path.rename(named)
        yield Upload(path, writer.filename)
    finally:
        path.unlink(missing_ok=True)

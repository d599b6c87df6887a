"""HTTP API and web page over GenreClassifier: the FastAPI app factory, its routes and the `serve` command (uvicorn).

Each uvicorn worker loads every checkpoint once, in the background (service.py): the port answers at once, with 503
until the models are ready. Uploads stream to temporary files (upload.py); errors are JSON {"error": "..."}.
"""

import asyncio
import json
import logging
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib.resources import files

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from music_genre_classification.config import UserError, latest_model
from music_genre_classification.serving.service import Service, Settings, checkpoint_paths
from music_genre_classification.serving.upload import ApiError, receive_file

log = logging.getLogger("music_genre_classification.serving.api")
SETTINGS_ENV = "MGC_SERVE_SETTINGS"  # how `serve` hands its settings to the uvicorn workers


def error(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


UPLOAD_BODY = {  # /predict reads its body itself (streaming); this tells OpenAPI and Swagger UI what to send
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "an audio file"}},
                }
            }
        },
    }
}
ERRORS = {
    status: {"description": text, "content": {"application/json": {"example": {"error": "..."}}}}
    for status, text in [
        (400, "unreadable, corrupt, silent or too short audio"),
        (404, "no model of that name"),
        (408, "the upload stalled (nothing arrived for --upload_timeout_s seconds)"),
        (413, "larger than the upload limit"),
        (415, "not audio"),
        (422, "no field 'file'"),
        (503, "the models are still loading"),
    ]
}


def create_app(settings: Settings) -> FastAPI:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.load())
        yield
        loading.cancel()
        service.close()

    app = FastAPIOffline(  # FastAPI with Swagger UI's files served from the package, not from a CDN
        title="Music genre classification",
        description="The genre of a song from its audio. Upload a file to POST /predict; GET / is a web page.",
        lifespan=lifespan,
    )
    app.state.service = service
    page = (files("music_genre_classification.serving") / "web" / "index.html").read_text()
    icon = (files("music_genre_classification.serving") / "web" / "favicon.svg").read_bytes()

    @app.exception_handler(ApiError)
    async def refused(request: Request, err: ApiError) -> JSONResponse:
        return error(err.status, str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:  # the traceback goes to the server's log
        return error(500, "internal server error; the server's log says more")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        return error(422, f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def web_page() -> str:
        return page

    @app.get("/favicon.ico", include_in_schema=False)  # what browsers ask for on every visit
    async def favicon() -> Response:
        return Response(icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health", responses={503: ERRORS[503]})
    async def health():
        """`ready` once every model is loaded (200), `loading` before (503)."""
        body = {"status": "ready" if service.ready else "loading", "models": service.names}
        return JSONResponse(body | {"max_upload_mb": settings.max_upload_mb}, status_code=200 if service.ready else 503)

    @app.get("/models", responses={503: ERRORS[503]})
    async def models() -> list[dict]:
        """Every model served, the default first: name, kind, genres and the validation metrics it was saved with."""
        service.model(service.names[0])  # 503 while loading
        return [m.info() | {"default": i == 0} for i, m in enumerate(service.models.values())]

    names = {"enum": service.names}  # Swagger UI offers them as a list

    @app.post("/predict", openapi_extra=UPLOAD_BODY, responses=ERRORS)
    async def predict(
        request: Request,
        model: str = Query(service.names[0], description="a name from GET /models", json_schema_extra=names),
        segments: bool = Query(False, description="add the per-window timeline (30-s windows)"),
        tags: bool = Query(False, description="add the audio's top tags (musicnn, Million Song Dataset)"),
    ) -> dict:
        """The genre of an uploaded audio file: `genre`, `probabilities` of every genre, `duration_s`, `segments`,
        `tags` (a list of {tag, probability}, most likely first)."""
        chosen = service.model(model)
        limits = settings.max_upload_mb, settings.upload_timeout_s
        async with receive_file(request, "file", service.uploads, *limits) as upload:
            prediction, reason = await chosen.batcher.predict(upload.path, tags)
        if reason is not None:
            # the client's file name in the message, never the server's temporary path
            raise ApiError(
                400, reason.replace(str(upload.path), upload.filename).replace(upload.path.name, upload.filename)
            )
        return prediction.to_dict(segments)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """One line per request: client, method, path and query, status, milliseconds."""

    def __init__(self, app):
        self.app, self.log = app, logging.getLogger("music_genre_classification.serving.access")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            client = ":".join(map(str, scope["client"])) if scope.get("client") else "-"
            query = scope.get("query_string", b"").decode()
            target = scope["path"] + (f"?{query}" if query else "")
            ms = (time.perf_counter() - start) * 1000
            self.log.info('%s "%s %s" %d %.0f ms', client, scope["method"], target, status, ms)


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker, from the settings `serve` put in the environment."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def check_port(host: str, port: int) -> None:
    """A clear error now, rather than a bind failure logged by each worker."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def run_server(
    model_path: str | list | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_upload_mb: float = 50.0,
    cors_origins: str | list | None = None,
    max_batch: int = 16,
    upload_timeout_s: float = 20.0,
) -> None:
    """HTTP API (POST /predict, GET /models, /health, Swagger UI at /docs) and web page (GET /) over the checkpoints.

    --model_path: a checkpoint, a folder of them or several separated by commas (?model=<file name> picks one);
    default the latest trained model, outputs/model_full.ckpt of the project;
    --cors_origins: origins allowed to call the API from a browser, comma-separated, or '*'.
    --upload_timeout_s: a client that sends nothing for this long in the middle of an upload gets 408.

    The `serve` command: uvicorn with `workers` processes until Ctrl+C or SIGTERM (requests in flight finish).
    """
    import uvicorn

    if workers < 1 or max_batch < 1 or max_upload_mb <= 0 or upload_timeout_s <= 0:
        raise UserError("--workers and --max_batch must be at least 1, --max_upload_mb and --upload_timeout_s positive")
    origins = cors_origins.split(",") if isinstance(cors_origins, str) else list(cors_origins or [])
    paths = checkpoint_paths(model_path or latest_model())
    settings = Settings(paths, max_upload_mb, [o.strip() for o in origins], max_batch, workers, upload_timeout_s)
    from music_genre_classification.models.classifier import GenreClassifier

    for path in settings.model_paths:  # a bad checkpoint is an error now, before uvicorn says it is running
        GenreClassifier.from_checkpoint(path, device="cpu")
    check_port(host, port)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run(
        "music_genre_classification.serving.api:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # AccessLog writes one line per request, with its duration
        timeout_graceful_shutdown=60,
        log_level="info",
    )

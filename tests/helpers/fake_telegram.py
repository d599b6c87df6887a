"""A fake Telegram Bot API server on 127.0.0.1: enough of the HTTP API for a long-polling bot that downloads files.

Tests queue updates (messages from users) and files, then read back what the bot sent.
"""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

TOKEN = "123456:TEST-token"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Genre", "username": "genre_test_bot"}
DOWNLOAD_LIMIT = 20 * 2**20  # api.telegram.org refuses getFile above this


class FakeBotAPI:
    def __init__(self, token: str = TOKEN):
        self.token = token
        self.updates: list[dict] = []
        self.files: dict[str, dict] = {}  # file_id -> {"path", "data", "size"}
        self.calls: list[tuple[str, dict]] = []  # (method, params) in the order they arrived
        self.changed = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self.server.request_queue_size = 128  # a bot may open many connections at once, as to api.telegram.org
        self.server.server_bind()
        self.server.server_activate()
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._ids = iter(range(1, 10**6))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/bot"

    def __enter__(self) -> "FakeBotAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what a test does --------------------------------------------------------------------------------------

    def add_file(self, data: bytes, file_path: str, announced_size: int | None = None) -> dict:
        """Store a file the bot can fetch; returns the fields a message carries about it."""
        file_id = f"file-{next(self._ids)}"
        size = len(data) if announced_size is None else announced_size
        self.files[file_id] = {"path": file_path, "data": data, "size": size}
        return {"file_id": file_id, "file_unique_id": file_id + "-u", "file_size": size}

    def send(self, *messages: tuple[int, dict]) -> list[int]:
        """Queue messages (chat id, message fields) from users, in one batch; returns their message ids."""
        ids = []
        with self.changed:
            for chat_id, fields in messages:
                message_id = next(self._ids)
                user = {"id": chat_id, "is_bot": False, "first_name": f"user{chat_id}"}
                message = {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private"},
                    "from": user,
                    **fields,
                }
                self.updates.append({"update_id": next(self._ids), "message": message})
                ids.append(message_id)
            self.changed.notify_all()
        return ids

    def sent(self, chat_id: int, method: str = "sendMessage") -> list[dict]:
        return [p for m, p in self.calls if m == method and int(p.get("chat_id", 0)) == chat_id]

    def wait_for(self, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the bot did not answer in {timeout} s; calls: {[m for m, _ in self.calls]}")
                self.changed.wait(left)

    def replies(self, chat_id: int, count: int = 1, timeout: float = 60) -> list[str]:
        self.wait_for(lambda: len(self.sent(chat_id)) >= count, timeout)
        return [p["text"] for p in self.sent(chat_id)]

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    # --- the HTTP side --------------------------------------------------------------------------------------------

    def _api(self, method: str, params: dict) -> tuple[int, dict]:
        if method == "getUpdates":
            return 200, {
                "ok": True,
                "result": self._poll(int(params.get("offset", 0)), float(params.get("timeout", 0))),
            }
        with self.changed:
            self.calls.append((method, params))
            self.changed.notify_all()
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        if method == "getFile":
            file = self.files.get(params.get("file_id"))
            if file is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            if file["size"] > DOWNLOAD_LIMIT:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: file is too big"}
            fields = {"file_id": params["file_id"], "file_unique_id": params["file_id"] + "-u"}
            return 200, {"ok": True, "result": {**fields, "file_size": file["size"], "file_path": file["path"]}}
        if method == "sendMessage":
            chat = {"id": int(params["chat_id"]), "type": "private"}
            result = {"message_id": next(self._ids), "date": int(time.time()), "chat": chat, "text": params["text"]}
            return 200, {"ok": True, "result": result}
        return 200, {"ok": True, "result": True}  # deleteWebhook, sendChatAction, setMyCommands, ...

    def _poll(self, offset: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + min(timeout, 1.0)  # short polls keep shutdown quick
        with self.changed:
            while True:
                pending = [u for u in self.updates if u["update_id"] >= offset]
                left = deadline - time.monotonic()
                if pending or left <= 0:
                    return pending
                self.changed.wait(left)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a poll the bot left while stopping
                    self.wfile.write(body)

            def do_POST(self):
                prefix = f"/bot{api.token}/"
                if not self.path.startswith(prefix):
                    body = {"ok": False, "error_code": 401, "description": "Unauthorized"}
                    return self._reply(401, json.dumps(body).encode())
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    params = json.loads(raw or "{}")
                else:
                    params = dict(parse_qsl(raw))
                status, body = api._api(self.path[len(prefix) :], params)
                self._reply(status, json.dumps(body).encode())

            def do_GET(self):
                prefix = f"/file/bot{api.token}/"
                path = unquote(self.path)  # httpx sends the token's ':' as %3A
                file = next((f for f in api.files.values() if path == prefix + f["path"]), None)
                if file is None:
                    return self._reply(404, f"not found: {path}".encode(), "text/plain")
                with api.changed:
                    api.calls.append(("download", {"path": file["path"]}))
                    api.changed.notify_all()
                self._reply(200, file["data"], "application/octet-stream")

        return Handler

"""Telegram bot: send a song, get its genre. Long polling with python-telegram-bot; inference off the event loop."""

import asyncio
import functools
import html
import logging
import os
import tempfile
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from music_genre_classification.config import UserError, latest_model
from music_genre_classification.data.audio import AUDIO_EXTENSIONS, AudioError
from music_genre_classification.models.classifier import GenreClassifier, Prediction
from music_genre_classification.models.tags import format_tags

log = logging.getLogger("music_genre_classification.serving.bot")

TELEGRAM_DOWNLOAD_LIMIT_MB = 20  # what bots may download from api.telegram.org
LOCAL_SERVER_LIMIT_MB = 2000  # a self-hosted telegram-bot-api server run with --local
DOCUMENT_EXTENSIONS = (*AUDIO_EXTENSIONS, ".oga")
MAX_TIMELINE_ROWS = 40  # keeps a reply for a long track well under Telegram's 4096 characters


def help_text(max_file_mb: float) -> str:
    return (
        "Send me a song and I will tell you its genre.\n\n"
        "Send it as an audio file, a voice note or a document (wav, mp3, ogg/opus, m4a, flac), "
        f"up to {max_file_mb:g} MB. I listen to it in 30-second windows and reply with the most likely genre, "
        "the probabilities of all genres and, for long tracks, a timeline."
    )


def format_reply(prediction: Prediction, bar_width: int = 12) -> str:
    """HTML for a phone: the genre in bold, then aligned probability bars and the per-window timeline."""
    rows = [f"{genre:<10}{p:4.0%} {'█' * round(p * bar_width)}" for genre, p in prediction.probabilities.items()]
    table = html.escape("\n".join(rows))
    text = f"<b>{html.escape(prediction.genre)}</b> ({_clock(prediction.duration_s)})\n<pre>{table}</pre>"
    if not prediction.music:  # no bold genre: the model's answer means little here
        text = (
            f"<b>Not sure</b> ({_clock(prediction.duration_s)}): this does not sound like music "
            f"({html.escape(prediction.not_music)}). The closest genre would be {html.escape(prediction.genre)}."
        )
    if prediction.tags and prediction.music:  # moods, eras, instruments of the audio (musicnn), beside the genre
        text += f"\nTags: {html.escape(format_tags(prediction.tags))}"
    if len(prediction.segments) > 1:
        shown = prediction.segments[:MAX_TIMELINE_ROWS]
        lines = [
            f"{_clock(s.start_s)}-{_clock(s.end_s)} "
            + (f"{s.genre:<10}{s.probability:4.0%}" if s.genre else f"no music ({s.not_music})")
            for s in shown
        ]
        if len(prediction.segments) > len(shown):
            lines.append(f"... {len(prediction.segments) - len(shown)} more windows")
        timeline = html.escape("\n".join(lines))
        text += f"\nTimeline:\n<pre>{timeline}</pre>"
    if prediction.warning:  # e.g. a file cut off: say which part was judged
        text += f"\n⚠ {html.escape(prediction.warning)}"
    return text


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class RateLimit:
    """Per user: one file at a time and at most `per_minute` files in any 60 s."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.recent: dict[int, deque[float]] = defaultdict(deque)
        self.busy: set[int] = set()

    def refusal(self, user: int) -> str | None:
        """Why this user must wait, or None after reserving a slot (give it back with `done`)."""
        now, recent = time.monotonic(), self.recent[user]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if user in self.busy:
            return "I am still working on your previous file; send the next one when it is done."
        if len(recent) >= self.per_minute:
            return f"That is more than {self.per_minute} files a minute; please wait {60 - (now - recent[0]):.0f} s."
        recent.append(now)
        self.busy.add(user)
        return None

    def done(self, user: int) -> None:
        self.busy.discard(user)


class GenreBot:
    def __init__(
        self,
        classifier: GenreClassifier,
        max_file_mb: float,
        files_per_minute: int = 5,
        workers: int = 2,
        tags: bool = False,
    ):
        self.classifier, self.max_file_mb, self.tags = classifier, max_file_mb, tags
        self.limit = RateLimit(files_per_minute)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genre")

    async def on_help(self, update, context) -> None:
        await update.effective_message.reply_text(help_text(self.max_file_mb))

    async def on_other(self, update, context) -> None:
        await update.effective_message.reply_text(
            "I only understand music. " + help_text(self.max_file_mb).split("\n\n", 1)[1]
        )

    async def on_file(self, update, context) -> None:
        message = update.effective_message
        attachment = message.audio or message.voice or message.document
        name = getattr(attachment, "file_name", None) or ("voice note" if message.voice else "your file")
        if message.document and not _is_audio_document(message.document):
            await message.reply_text(
                f"{name} does not look like audio. Send wav, mp3, ogg/opus, m4a or flac, as audio or as a file."
            )
            return
        if _too_big(attachment.file_size, self.max_file_mb):
            await message.reply_text(self._too_big_text(attachment.file_size))
            return
        user = update.effective_user.id if update.effective_user else message.chat_id
        if refusal := self.limit.refusal(user):
            await message.reply_text(refusal)
            return
        try:
            await message.reply_chat_action("typing")
            reply = await self._classify(context.bot, attachment, name)
        finally:
            self.limit.done(user)
        await message.reply_text(reply, parse_mode="HTML")

    async def _classify(self, bot, attachment, name: str) -> str:
        """The reply, as Telegram HTML: the genre table, or why there is none."""
        from telegram.error import TelegramError

        with tempfile.TemporaryDirectory(prefix="genre-bot-") as folder:
            try:
                tg_file = await bot.get_file(attachment.file_id)
                if _too_big(tg_file.file_size, self.max_file_mb):
                    return html.escape(self._too_big_text(tg_file.file_size))
                path = Path(folder) / ("audio" + _suffix(name, tg_file.file_path))
                await tg_file.download_to_drive(path)
            except TelegramError as err:
                log.warning("download of %s failed: %s", attachment.file_id, err)
                return html.escape(f"I could not download {name} from Telegram ({err.message}).")
            try:
                job = functools.partial(self.classifier.predict, path, tags=self.tags)
                prediction = await asyncio.get_running_loop().run_in_executor(self.pool, job)
            except AudioError as err:
                log.info("%s: %s", name, err)
                reason = str(err).replace(f"{path}: ", "").replace(str(path), name)  # no server paths in replies
                return html.escape(f"I cannot classify {name}: {reason}.")
            if prediction.warning:
                prediction.warning = prediction.warning.replace(str(path), name)
        return format_reply(prediction)

    def _too_big_text(self, size: int) -> str:
        return (
            f"This file is {size / 2**20:.1f} MB; bots can only download files up to {self.max_file_mb:g} MB. "
            "Send a shorter or more compressed version (an mp3 of a song is usually 3-10 MB)."
        )

    async def on_error(self, update, context) -> None:
        log.error("error while handling an update", exc_info=context.error)
        message = getattr(update, "effective_message", None)
        if message is not None:
            try:
                await message.reply_text("Sorry, something went wrong with that file. Please try again.")
            except Exception:  # the network may be what failed; it is logged above
                log.warning("could not tell the user about the error")


def _is_audio_document(document) -> bool:
    name = (document.file_name or "").lower()
    return (document.mime_type or "").startswith("audio/") or name.endswith(DOCUMENT_EXTENSIONS)


def _too_big(size: int | None, max_file_mb: float) -> bool:
    return size is not None and size > max_file_mb * 2**20


def _suffix(name: str, file_path: str | None) -> str:
    """An extension for the temporary file, so that ffmpeg can be picked for formats soundfile cannot read."""
    for candidate in (name, file_path or ""):
        suffix = Path(candidate).suffix.lower()
        if suffix in DOCUMENT_EXTENSIONS:
            return suffix
    return ".audio"


def build_application(
    genre_bot: GenreBot, token: str, base_url: str | None, base_file_url: str | None, local_mode: bool
):
    from telegram import BotCommand
    from telegram.ext import Application, CommandHandler, MessageHandler, filters

    async def set_commands(app: Application) -> None:
        log.info("bot @%s is listening (long polling); Ctrl+C stops it", app.bot.username)
        await app.bot.set_my_commands([BotCommand("start", "what this bot does"), BotCommand("help", "what to send")])

    builder = Application.builder().token(token).concurrent_updates(True).post_init(set_commands)
    if base_url:
        builder = builder.base_url(base_url).base_file_url(base_file_url or _file_url(base_url))
    app = builder.local_mode(local_mode).build()
    app.add_handler(CommandHandler(["start", "help"], genre_bot.on_help))
    app.add_handler(MessageHandler(filters.AUDIO | filters.VOICE | filters.Document.ALL, genre_bot.on_file))
    app.add_handler(MessageHandler(filters.ALL, genre_bot.on_other))
    app.add_error_handler(genre_bot.on_error)
    return app


def _file_url(base_url: str) -> str:
    """https://host/bot -> https://host/file/bot, the layout of api.telegram.org and of telegram-bot-api."""
    head, _, tail = base_url.rstrip("/").rpartition("/")
    return f"{head}/file/{tail}"


async def _check_token(token: str, base_url: str | None) -> None:
    """Ask the server who we are before polling, so a bad token or address is one clear line, not a retry loop."""
    from telegram import Bot
    from telegram.error import InvalidToken, NetworkError

    bot = Bot(token, base_url=base_url) if base_url else Bot(token)
    try:
        async with bot:
            log.info("bot @%s is starting", bot.username)
    except InvalidToken:
        raise UserError("Telegram refused the bot token; copy it again from @BotFather") from None
    except NetworkError as err:
        raise UserError(
            f"cannot reach the Telegram Bot API at {base_url or 'api.telegram.org'}: {err.message}"
        ) from None


def run_bot(
    model_path: str | None = None,
    token: str | None = None,
    base_url: str | None = None,
    base_file_url: str | None = None,
    local_mode: bool = False,
    max_file_mb: float | None = None,
    files_per_minute: int = 5,
    tags: bool = False,
) -> None:
    """Telegram bot (long polling) answering with the genre of the songs users send.

    Token from --token or TELEGRAM_BOT_TOKEN; --base_url for a self-hosted server;
    --model_path: default the latest trained model, outputs/model_full.ckpt of the project;
    --tags: each reply also gives the song's top tags (moods, eras, instruments, styles) from musicnn.

    The `bot` command: load the model once, then answer messages until Ctrl+C or SIGTERM."""
    token = token or os.environ.get("TELEGRAM_BOT_TOKEN")
    if not token:
        raise UserError("no bot token: pass --token or set TELEGRAM_BOT_TOKEN (create a bot with @BotFather)")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per long poll otherwise
    classifier = GenreClassifier.from_checkpoint(model_path or latest_model())
    if max_file_mb is None:
        max_file_mb = LOCAL_SERVER_LIMIT_MB if local_mode else TELEGRAM_DOWNLOAD_LIMIT_MB
    asyncio.run(_check_token(str(token), base_url))
    genre_bot = GenreBot(classifier, max_file_mb, files_per_minute, tags=tags)
    try:
        build_application(genre_bot, str(token), base_url, base_file_url, local_mode).run_polling()
    finally:
        genre_bot.pool.shutdown(cancel_futures=True)

"""The `bot` command: the real python-telegram-bot Application, long polling a fake Bot API server on 127.0.0.1."""

import re

import numpy as np
import pytest
from helpers.audio import CLIP_S, GENRES, SR, encode, needs_espeak, speech, tone
from helpers.fake_telegram import FakeBotAPI
from helpers.processes import REPO, bot_process, run_cli

from music_genre_classification.models.musicnn import MSD_TAGS

FILES_PER_MINUTE = 3


def mp3(genre: str, seconds: float = CLIP_S, seed: int = 1) -> bytes:
    return encode(tone(genre, seed, seconds, sr=44100), "MP3", sr=44100)


def genre_of(reply: str) -> str:
    return re.match(r"<b>(\w+)</b>", reply).group(1)


def bars(reply: str) -> dict[str, int]:
    """genre -> percent, from the probability table of a reply."""
    table = reply.split("<pre>")[1].split("</pre>")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)%", table, re.M)}


@pytest.fixture(scope="module")
def bot(trained, tmp_path_factory):
    """`commands bot` in its own process, its temporary files in a folder of its own."""
    tmp = tmp_path_factory.mktemp("bot_tmp")
    with bot_process(trained["checkpoint"], tmp, "--files_per_minute", str(FILES_PER_MINUTE), "--tags") as api:
        yield api, tmp


def test_start_and_help_explain_what_to_send(bot):
    api, _ = bot
    api.send((101, {"text": "/start", "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}))
    reply = api.replies(101)[0]
    assert "genre" in reply and "mp3" in reply and "20 MB" in reply


def test_mp3_document_gets_genre_and_every_probability(bot):
    api, _ = bot
    file = api.add_file(mp3("high"), "documents/file_1.mp3")
    api.send((102, {"document": {**file, "file_name": "song.mp3", "mime_type": "audio/mpeg"}}))
    reply = api.replies(102)[0]
    assert genre_of(reply) == "high"
    percents = bars(reply)
    assert list(percents) == sorted(percents, key=percents.get, reverse=True) and set(percents) == set(GENRES)
    assert abs(sum(percents.values()) - 100) <= len(GENRES)  # rounding
    assert "Timeline" not in reply  # 10 s: one window
    tags = re.search(r"^Tags: (.+)$", reply, re.M).group(1).split(", ")  # --tags: musicnn's top tags of the audio
    assert len(tags) == 5 and all(t.rsplit(" ", 1)[0] in MSD_TAGS and 0 < float(t.rsplit(" ", 1)[1]) < 1 for t in tags)
    assert api.sent(102, "sendChatAction"), "the user sees that the bot is working"


def test_ogg_opus_voice_note(bot):
    api, _ = bot
    file = api.add_file(encode(tone("low", 2, sr=48000), "OGG", "OPUS", sr=48000), "voice/file_2.oga")
    api.send((103, {"voice": {**file, "duration": round(CLIP_S), "mime_type": "audio/ogg"}}))
    assert genre_of(api.replies(103)[0]) == "low"


def test_two_minute_track_averages_windows_and_shows_the_timeline(bot):
    api, _ = bot
    track = np.concatenate([tone("low", 5, 90, sr=SR), tone("high", 6, 30, sr=SR)])
    file = api.add_file(encode(track, "FLAC"), "music/file_3.flac")
    api.send((104, {"audio": {**file, "duration": 120, "file_name": "long.flac", "mime_type": "audio/flac"}}))
    reply = api.replies(104)[0]
    assert genre_of(reply) == "low"  # three windows of four
    timeline = reply.split("Timeline:")[1]
    rows = re.findall(r"(\d+:\d\d)-(\d+:\d\d) (\w+)", timeline)
    assert rows == [("0:00", "0:30", "low"), ("0:30", "1:00", "low"), ("1:00", "1:30", "low"), ("1:30", "2:00", "high")]


def test_a_file_over_20_mb_is_refused_before_downloading(bot):
    api, _ = bot
    file = api.add_file(mp3("low"), "documents/file_4.mp3", announced_size=25 * 2**20)
    api.send((105, {"document": {**file, "file_name": "huge.mp3", "mime_type": "audio/mpeg"}}))
    reply = api.replies(105)[0]
    assert "25.0 MB" in reply and "20 MB" in reply
    assert not [p for m, p in api.calls if m == "getFile" and p["file_id"] == file["file_id"]]


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "what genre is this?"},
        {
            "sticker": {
                "file_id": "s",
                "file_unique_id": "s",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
                "type": "regular",
            }
        },
        {"document": {"file_id": "d", "file_unique_id": "d", "file_name": "notes.pdf", "mime_type": "application/pdf"}},
    ],
    ids=["text", "sticker", "pdf"],
)
def test_anything_but_audio_gets_a_helpful_answer(bot, fields):
    api, _ = bot
    chat = 200 + len(api.calls)
    api.send((chat, fields))
    reply = api.replies(chat)[0]
    assert "mp3" in reply and ("music" in reply or "audio" in reply)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"ID3\x03\x00\x00\x00garbage that is not an mp3 frame" * 20, "not a readable audio file"),
        (encode(np.zeros(round(CLIP_S * SR), dtype=np.float32), "WAV"), "silent"),
    ],
    ids=["corrupt", "silent"],
)
def test_bad_audio_gets_a_clear_reply(bot, data, expected):
    api, _ = bot
    chat = 300 + len(api.calls)
    file = api.add_file(data, f"documents/bad_{chat}.mp3")
    api.send((chat, {"document": {**file, "file_name": "bad.mp3", "mime_type": "audio/mpeg"}}))
    reply = api.replies(chat)[0]
    assert reply.startswith("I cannot classify bad.mp3") and expected in reply
    assert "/tmp" not in reply and str(REPO) not in reply


@needs_espeak
def test_speech_gets_not_sure_instead_of_a_genre(bot, tmp_path):
    api, _ = bot
    file = api.add_file(speech(tmp_path / "news.wav").read_bytes(), "documents/news.wav")
    api.send((700, {"document": {**file, "file_name": "news.wav", "mime_type": "audio/wav"}}))
    reply = api.replies(700)[0]
    assert reply.startswith("<b>Not sure</b>") and "does not sound like music (speech-like)" in reply
    assert "<pre>" not in reply and "Tags:" not in reply  # no bars or tags that would read as a verdict
    song = api.add_file(mp3("mid", seed=3), "documents/song_700.mp3")
    api.send((701, {"document": {**song, "file_name": "song.mp3", "mime_type": "audio/mpeg"}}))
    assert genre_of(api.replies(701)[0]) == "mid" and "Not sure" not in api.replies(701)[0]


def test_two_users_are_served_at_once(bot):
    api, _ = bot
    files = [api.add_file(mp3(g, 60, seed=9), f"music/both_{g}.mp3") for g in ("low", "high")]
    api.send(*[(chat, {"audio": {**f, "duration": 60}}) for chat, f in zip((401, 402), files)])
    assert genre_of(api.replies(401)[0]) == "low" and genre_of(api.replies(402)[0]) == "high"
    order = [(m, int(p.get("chat_id", 0))) for m, p in api.calls if m in ("sendChatAction", "sendMessage")]
    order = [x for x in order if x[1] in (401, 402)]
    first_reply = next(i for i, (m, _) in enumerate(order) if m == "sendMessage")
    assert {c for m, c in order[:first_reply] if m == "sendChatAction"} == {401, 402}, order


def test_one_user_cannot_flood_the_bot(bot):
    api, _ = bot
    for i in range(FILES_PER_MINUTE + 1):
        file = api.add_file(mp3("mid", seed=i), f"music/flood_{i}.mp3")
        api.send((500, {"audio": {**file, "duration": round(CLIP_S)}}))
        api.replies(500, count=i + 1)
    replies = api.sent(500)
    assert all(genre_of(r["text"]) == "mid" for r in replies[:FILES_PER_MINUTE])
    assert f"more than {FILES_PER_MINUTE} files a minute" in replies[-1]["text"]


def test_temporary_files_are_removed(bot):
    api, tmp = bot
    file = api.add_file(mp3("low"), "music/last.mp3")
    api.send((600, {"audio": {**file, "duration": round(CLIP_S)}}))
    api.replies(600)
    assert list(tmp.iterdir()) == []


def test_no_token_is_a_clear_error(trained, tmp_path, cli_in_process):
    env = {"TELEGRAM_BOT_TOKEN": ""}  # in this process: the `bot` fixture runs the command in its own
    result = cli_in_process("bot", trained["checkpoint"], cwd=tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "@BotFather" in result.stderr


def test_a_refused_token_is_a_clear_error(trained, tmp_path):
    with FakeBotAPI() as api:
        args = ["bot", str(trained["checkpoint"]), "--token", "999:wrong", "--base_url", api.base_url]
        result = run_cli(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Telegram refused the bot token")

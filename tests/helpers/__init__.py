"""What the tests share besides fixtures (those are in tests/conftest.py): `from helpers.audio import tone`, ...

audio: synthetic genres as waveforms, files and tables; processes: the real CLI, server and bot in their own
processes; hostile: broken, odd and misleading audio files with what every entry point must do with them;
fake_telegram: a Bot API server on 127.0.0.1 for the bot.
"""

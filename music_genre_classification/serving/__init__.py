"""Everything that labels audio with a trained checkpoint: the Python API, the CLI pieces and the bot."""

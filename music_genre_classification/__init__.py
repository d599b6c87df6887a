"""Music genre classification: log-mel spectrograms, a small CNN, and tools to train, test and label music."""

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")

"""Audio decoding, the log-mel front end, datasets, splits and fetching the data with DVC."""

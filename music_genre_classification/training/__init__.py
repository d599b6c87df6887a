"""Training, evaluation and their plots."""

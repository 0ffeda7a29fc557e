"""The Try page: chat with a trained run, base against tuned, adapter against adapter."""

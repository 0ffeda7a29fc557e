"""Crash-safe file writes for the trainer: the planner's own (one implementation for both)."""

from planner.atomic import atomic_dir, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text"]

"""memsnap: record, classify, diff and replay Linux process memory maps over time."""

__version__ = "0.1.0"

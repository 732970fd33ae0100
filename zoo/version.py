"""The version of zoo: recorded in every file it writes and every report."""

__version__ = "0.1.0"

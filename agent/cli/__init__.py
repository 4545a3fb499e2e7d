"""The command line: parsing, rendering (text and JSON), logging and redaction."""

from .main import main, run

__all__ = ["main", "run"]

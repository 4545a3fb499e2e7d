"""The command line: parsing, rendering (text and JSON), logging and redaction."""

from .main import main

__all__ = ["main"]

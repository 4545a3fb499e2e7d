"""Recorded vendor shapes: bodies and headers as the vendors' public API references and SDKs
show them, each with its source named. They are fed through the connectors as the real
services would serve them, and compared with what the fakes in tests/fakes/ serve."""

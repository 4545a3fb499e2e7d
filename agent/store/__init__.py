"""The SQLite snapshot: what was pushed, the last source view, run history, locks."""

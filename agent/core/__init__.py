"""The pure core: model, mapping, plan and guard. No I/O library is imported here."""

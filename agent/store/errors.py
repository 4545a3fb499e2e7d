"""What the store raises. Every message names the file and says what to do."""

from __future__ import annotations

OWNERSHIP_HINT = ("files in the state folder belong to another user (a command run as root "
                  "next to the service?); give them back to the user the agent runs as, e.g. "
                  "chown -R --reference=<state folder> <state folder>")


class StateError(Exception):
    """The snapshot cannot be opened, is locked by another agent, or is damaged."""


def a_folder(path) -> StateError:
    """[state] path names a folder."""
    return StateError(f"{path}: is a folder, not a snapshot file; [state] path must name a "
                      "file (it is created on the first sync)")


class StateBusy(StateError):
    """Another agent holds the snapshot's lock right now."""

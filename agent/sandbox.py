"""What the shipped systemd units hide from the agent, so that an error about a path says why.

Both units (``systemd/scim-agent.service`` and ``scim-agent@.service``) set
``SCIM_AGENT_UNIT=%n``. Under them, ``PrivateTmp=yes`` gives the service a ``/tmp`` and a
``/var/tmp`` of its own, empty; ``ProtectHome=yes`` hides ``/home``, ``/root`` and
``/run/user``; ``DynamicUser=yes`` runs it as a user of its own, which cannot read a file only
root may read (secrets come through ``LoadCredential=``). A path that works from a root shell
then fails in the service with a bare "not found" or "permission denied"; these helpers give
the loader the reason to add. Outside the units they say nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PRIVATE_TMP = "PrivateTmp=yes, which gives it a /tmp and /var/tmp of its own (empty)"
_PROTECT_HOME = "ProtectHome=yes, which hides /home, /root and /run/user from it"
HIDDEN = {Path("/tmp"): _PRIVATE_TMP, Path("/var/tmp"): _PRIVATE_TMP,
          Path("/home"): _PROTECT_HOME, Path("/root"): _PROTECT_HOME,
          Path("/run/user"): _PROTECT_HOME}
READABLE_FOLDER = "/srv/scim-agent/"      # what the docs suggest for exports


def unit(environ: Mapping[str, str] = os.environ) -> str | None:
    """The unit the agent runs under (``scim-agent.service``, ``scim-agent@acme.service``)."""
    return environ.get("SCIM_AGENT_UNIT") or None


def hidden_by_unit(path: Path, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the service cannot see ``path``: it runs under one of the units and ``path`` lies
    in a folder the unit hides. None otherwise (and outside the units)."""
    name = unit(environ)
    if name is None:
        return None
    for folder, reason in HIDDEN.items():
        if path == folder or folder in path.parents:
            return f"{name} runs the agent with {reason}"
    return None


def unreadable_under_unit(path: Path, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the service may not read the secret file ``path`` and what to do, under one of
    the units; None outside them."""
    name = unit(environ)
    if name is None:
        return None
    return (f"{name} runs the agent as a user of its own (DynamicUser=yes), which cannot read "
            f"a file only root may read: {hand_over(path, name)}")


def hand_over(path: Path, name: str) -> str:
    """How to give the service a secret file through systemd, whatever hides it."""
    credential = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name) or "secret"
    return (f"hand it over with LoadCredential={credential}:{path} in a drop-in "
            f"(systemctl edit {name}) and write {{ credential = \"{credential}\" }}")


def visible(path: Path) -> bool:
    """``path`` exists for this process (False, not an error, when a folder is closed)."""
    return os.path.exists(path)

"""``scim-agent check`` and the token's age: read-only, one line per thing checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from connectors.base import Source, Target

from ..config import Config
from ..core.coverage import configured_names, unseen_attributes
from ..store.access import diagnose
from ..store.state import State, StateError, lock_holder

TOKEN_LIFETIME = dt.timedelta(days=365)
TOKEN_WARNING = dt.timedelta(days=30)

Check = tuple[str, bool, str]          # (what, ok, detail)


def token_warning(config: Config, today: dt.date | None = None) -> str:
    created = config.target.token_created
    if created is None:
        return ""
    expires = created + TOKEN_LIFETIME
    left = (expires - (today or dt.date.today())).days
    if left < 0:
        return (f"the SCIM token created {created} expired on {expires}; regenerate it in Split "
                "(Admin settings > Security > SCIM)")
    if dt.timedelta(days=left) <= TOKEN_WARNING:
        return (f"the SCIM token expires on {expires} ({left} days left); regenerate it in Split "
                "and update [target] token and token_created")
    return ""


def token_days_left(config: Config, today: dt.date | None = None) -> int | None:
    created = config.target.token_created
    if created is None:
        return None
    return (created + TOKEN_LIFETIME - (today or dt.date.today())).days


def run_checks(config: Config, make_source: Callable[[], Source],
               make_target: Callable[[], Target]) -> list[Check]:
    """Read-only checks of the config, the source, the target, the token and the snapshot."""
    results: list[Check] = [("config", True, str(config.path))]
    what = f"source ({config.source.type})"
    names = configured_names(config.source.attributes, config.source.group_attributes,
                             config.source.scope)
    try:
        source = make_source()
        try:
            counts = source.check()
            results.append((what, True, ", ".join(f"{k}: {v}" for k, v in counts.items())))
            if names:
                try:
                    results.append(mapping_check(source.read(), names))
                except Exception as exc:
                    results.append(("mapping", False, f"reading the source: {_one_line(exc)}"))
        finally:
            source.close()
    except Exception as exc:  # any failure is a failed check, said in one line
        results.append((what, False, _one_line(exc)))
    try:
        target = make_target()
        try:
            counts = target.check()
        finally:
            target.close()
        results.append(("target", True, ", ".join(f"{k}: {v}" for k, v in counts.items())))
    except Exception as exc:
        results.append(("target", False, _one_line(exc)))
    warning = token_warning(config)
    if warning:
        results.append(("token", True, f"warning: {warning}"))
    elif config.target.token_created:
        results.append(("token", True, f"{token_days_left(config)} days left"))
    results.append(("state",) + state_check(config.state.path))
    return results


def mapping_check(directory, names) -> Check:
    """The attribute names the config reads that no record carries: a typo, or an attribute
    the source does not return. A warning, not a failure: an attribute may simply be set on
    no one yet."""
    unseen = unseen_attributes(directory, names)
    if not unseen:
        count = len({n for n, _w, _k in names})
        return ("mapping", True, f"every attribute the config reads is on some record "
                                 f"({count} name{'s' * (count != 1)})")
    return ("mapping", True, "warning: " + "; ".join(u.describe() for u in unseen)
            + " (a typo, or an attribute the source does not return; if it is just set on "
              "no one yet, ignore this)")


def state_check(path: Path) -> tuple[bool, str]:
    """Can the snapshot be written (or created) by this user, as sync will, and is an agent
    using it right now?"""
    try:
        diagnose(path, write=True)
        state = State.read(path, missing_ok=True)
        if state is None:
            return True, f"{path}: not created yet (the first sync creates it)"
        with state:
            counts = state.counts()
    except StateError as exc:
        return False, str(exc)
    detail = f"{path}: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
    holder = lock_holder(path)
    if holder is not None:
        detail += f"; in use now by pid {holder}" if holder else "; in use now"
    return True, detail


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

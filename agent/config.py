"""TOML -> typed, frozen, validated config; secrets resolution.

Every section is a frozen dataclass; one generic validator walks the TOML table against the
dataclass fields, so an unknown key, a wrong type, a bad value or an unreadable secret is
reported the same way everywhere: ``<file>: [section] key: what is wrong``. An unknown key or
section names the nearest known one ("did you mean ...?"). Each source declares its own
``Settings`` dataclass (see ``connectors/base.py``) and is validated by the same code, so
adding a source adds no code here. A secret field whose metadata says ``"token": True`` is
sent as a token (an HTTP header, a client secret): its format is checked at load
(``agent/secrets.py``).

The section types themselves are in ``agent/settings.py`` (re-exported here: ``load`` returns
them).
"""

from __future__ import annotations

__all__ = ["Config", "ConfigError", "MetricsConfig", "ScheduleConfig", "SourceConfig",
           "StateConfig", "SyncConfig", "TargetConfig", "Threshold", "config_path",
           "describe_fields", "did_you_mean", "format_duration", "load", "parse_duration",
           "secrets_of"]

import dataclasses
import datetime as dt
import difflib
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors import SOURCES, source_class
from connectors.redaction import without_credentials
from connectors.base import TARGET_DIALECTS, USER_ATTRIBUTES, Secret, SettingError, is_loopback

from . import sandbox
from .core.expressions import Expression, ExpressionError
from .core.mapping import GROUP_ATTRIBUTES
from .core.scope import KEYS as SCOPE_KEYS
from .core.scope import Scope, ScopeError
from .secrets import resolve_secret, token_problem
from .settings import (Config, MetricsConfig, ScheduleConfig, SourceConfig, StateConfig,
                       SyncConfig, TargetConfig, Threshold, describe_fields, format_duration,
                       parse_duration)

DEFAULT_CONFIG_PATH = Path("/etc/scim-agent/config.toml")


class ConfigError(Exception):
    """The config file is missing, unreadable or wrong. The message names file and key, and
    never echoes what looks like a credential (a token pasted into a URL or an id field: the
    config's secrets are not known to the redaction yet)."""

    def __init__(self, message: str):
        where, colon, what = message.partition(": ")     # the file's path is shown as it is
        super().__init__(where + colon + without_credentials(what))


# ---------------------------------------------------------------------------------------------
# Loading


class _Context:
    def __init__(self, path: Path, resolve_target_secrets: bool, resolve_source_secrets: bool):
        self.path = path
        self.base = path.parent
        self.resolve_target_secrets = resolve_target_secrets
        self.resolve_source_secrets = resolve_source_secrets

    def resolves(self, section: str) -> bool:
        if section == "target":
            return self.resolve_target_secrets
        if section == "source":
            return self.resolve_source_secrets
        return True

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")


def config_path(explicit: str | os.PathLike | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("SCIM_AGENT_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike, *, resolve_target_secrets: bool = True,
         resolve_source_secrets: bool = True) -> Config:
    """Read and validate the config. ``resolve_target_secrets=False`` lets ``plan`` run with
    no SCIM token available; ``status`` needs no secret at all. A secret that is configured
    but not resolved is an unresolved :class:`Secret` (its form is still checked)."""
    path = Path(path).absolute()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (use --config or $SCIM_AGENT_CONFIG)")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text")
    ctx = _Context(path, resolve_target_secrets, resolve_source_secrets)

    known = {"state", "source", "target", "sync", "schedule", "metrics"}
    for key in raw:
        if key not in known:
            # [attributes] or [[scope]] written without "source.": suggest the full name
            nearest = did_you_mean(key, known | {f"source.{k}" for k in SOURCE_TABLES})
            raise ctx.error(f"[{key}]", f"unknown section{nearest} "
                                        f"(expected one of {', '.join(sorted(known))})")
    for required in ("state", "source", "target"):
        if required not in raw:
            raise ctx.error(f"[{required}]", "section is missing")

    config = Config(
        path=path,
        state=_build(StateConfig, raw["state"], "state", ctx),
        source=_build_source(raw["source"], ctx),
        target=_build(TargetConfig, raw["target"], "target", ctx),
        sync=_build(SyncConfig, raw.get("sync", {}), "sync", ctx),
        schedule=_build(ScheduleConfig, raw.get("schedule", {}), "schedule", ctx),
        metrics=_build(MetricsConfig, raw.get("metrics", {}), "metrics", ctx),
    )
    _check_paths_are_seen(config.target, "target", ctx)
    _check_state_is_the_units(config.state.path, ctx)
    _check_values(config, ctx)
    return config


def _check_state_is_the_units(path: Path, ctx: _Context) -> None:
    """Under a unit with a state folder (``$STATE_DIRECTORY``), the snapshot must be in it:
    nowhere else may the service write, and an instance of ``scim-agent@`` pointed at another
    organisation's snapshot (a config copied and not quite edited) must not start."""
    unit, folders = sandbox.unit(), os.environ.get("STATE_DIRECTORY", "")
    folders = [Path(f) for f in folders.split(":") if f]
    if unit is None or not folders:
        return
    if any(f in path.parents or f.resolve() in path.resolve().parents for f in folders):
        return
    raise ctx.error("[state] path", f"{path} is outside the state folder of {unit} "
                                    f"({folders[0]}), the only place the service may write: "
                                    f"use path = \"{folders[0] / path.name}\"")


def _check_paths_are_seen(values: Any, section: str, ctx: _Context) -> None:
    """A file the section reads (a file export, a CA bundle) in a folder the systemd unit
    hides from the service: say so, rather than "not found" later. Run under the shipped
    units only (``agent/sandbox.py``); the snapshot's own path is not checked here."""
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        if not isinstance(value, Path) or sandbox.visible(value):
            continue
        hidden = sandbox.hidden_by_unit(value)
        if hidden:
            raise ctx.error(f"[{section}] {f.name}",
                            f"{value} cannot be seen by the service: {hidden}; put it in a "
                            f"folder the service can read, such as {sandbox.READABLE_FOLDER} "
                            f"(the folder and the file readable by others), and point "
                            f"{f.name} there")


def did_you_mean(word: object, known) -> str:
    """``"; did you mean 'x'?"`` for the known name nearest to ``word`` (case ignored), or ""."""
    folded = {k.lower(): k for k in known}
    word = str(word).lower()
    close = [k for k in folded if k.rpartition(".")[2] == word]      # scope -> source.scope
    close = close or difflib.get_close_matches(word, folded, n=1, cutoff=0.6)
    return f"; did you mean {folded[close[0]]!r}?" if close else ""


SOURCE_TABLES = ("attributes", "group_attributes", "scope")   # [source.*], read here


def _build_source(table: Any, ctx: _Context) -> SourceConfig:
    if not isinstance(table, dict):
        raise ctx.error("[source]", "must be a table")
    table = dict(table)
    type_name = table.pop("type", None)
    if type_name is None:
        raise ctx.error("[source] type", f"is required ({' | '.join(SOURCES)})")
    if type_name not in SOURCES:
        raise ctx.error("[source] type", f"{type_name!r} is not one of {', '.join(SOURCES)}"
                                         f"{did_you_mean(type_name, SOURCES)}")
    mapped = _expressions(table.pop("attributes", {}), "source.attributes", USER_ATTRIBUTES,
                          "SCIM user attribute this agent sends", ctx)
    group_mapped = _expressions(table.pop("group_attributes", {}), "source.group_attributes",
                                GROUP_ATTRIBUTES, "group attribute this agent sends", ctx)
    try:
        scope = Scope.parse(table.pop("scope", []))
    except ScopeError as exc:
        where = "[[source.scope]]" + (f" #{exc.number}" if exc.number else "")
        message = exc.message
        if exc.key and exc.key not in SCOPE_KEYS:          # an unknown key of a rule
            nearest = did_you_mean(exc.key, SCOPE_KEYS)
            message = message.replace("unknown key", "unknown key" + nearest, 1)
        raise ctx.error(f"{where} {exc.key}" if exc.key else where, message)
    settings = _build(source_class(type_name).Settings, table, "source", ctx,
                      also_known=("type",) + SOURCE_TABLES)
    _check_paths_are_seen(settings, "source", ctx)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        try:
            validate()
        except SettingError as exc:
            raise ctx.error(f"[source] {exc.key}" if exc.key else "[source]", exc.message)
    # a source setting may choose among the source's own mappings (Okta's username); what
    # [source.attributes] says explicitly still wins
    chosen = getattr(settings, "mapping_overrides", None)
    if chosen is not None:
        mapped = {**{k: Expression.parse(tuple(v)) for k, v in chosen().items()}, **mapped}
    return SourceConfig(type=type_name, settings=settings, attributes=mapped,
                        group_attributes=group_mapped, scope=scope)


def _expressions(table: Any, section: str, known: frozenset[str], what: str,
                 ctx: _Context) -> dict[str, Expression]:
    """``[source.attributes]`` or ``[source.group_attributes]``: SCIM name -> expression,
    each parsed now, so a mistake is named with its key and position before anything runs."""
    if not isinstance(table, dict):
        raise ctx.error(f"[{section}]", "must be a table of SCIM name = expression")
    out: dict[str, Expression] = {}
    for scim_name, value in table.items():
        if scim_name not in known:
            raise ctx.error(f"[{section}] {scim_name}",
                            f"not a {what}{did_you_mean(scim_name, known)} "
                            f"({', '.join(sorted(known))})")
        try:
            out[scim_name] = Expression.parse(value)
        except ExpressionError as exc:
            raise ctx.error(f"[{section}] {scim_name}", str(exc))
    return out


def _build(cls: type, table: Any, section: str, ctx: _Context, also_known: tuple[str, ...] = ()):
    """``also_known``: keys of the section read elsewhere ([source] type, its tables)."""
    if not isinstance(table, dict):
        raise ctx.error(f"[{section}]", "must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            known = sorted(set(fields) | set(also_known))
            raise ctx.error(f"[{section}] {key}", f"unknown key{did_you_mean(key, known)} "
                                                  f"(known keys: {', '.join(known)})")
    values = {}
    for name, f in fields.items():
        where = f"[{section}] {name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ctx.error(where, "is required")
            continue
        values[name] = _coerce(hints[name], table[name], where, ctx,
                               resolve=ctx.resolves(section),
                               token=bool(f.metadata.get("token")))
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str, ctx: _Context, resolve: bool = True,
            token: bool = False):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, where, ctx, resolve, token)
    try:
        if hint is Secret:
            return resolve_secret(value, ctx.base, lambda text: ctx.error(where, text), resolve,
                                  token=token)
        if hint is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected a whole number")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("expected a number")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if hint is Path:
            if not isinstance(value, str) or not value:
                raise ValueError("expected a file path")
            path = Path(value).expanduser()
            return path if path.is_absolute() else (ctx.base / path)
        if hint is dt.timedelta:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                raise ValueError(f"{value} has no unit, and a bare number is ambiguous (seconds? "
                                 f"minutes?); write it with one, such as \"30s\", \"5m\" or "
                                 f"\"1h\"")
            return parse_duration(value)
        if hint is dt.date:
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            if isinstance(value, str):
                try:
                    return dt.date.fromisoformat(value)
                except ValueError:
                    pass
            raise ValueError("expected a date such as 2026-11-01")
        if hint is Threshold:
            return _threshold(value)
        if origin is tuple:
            return _coerce_str_tuple(value)
    except ValueError as exc:
        raise ctx.error(where, str(exc))
    raise ctx.error(where, f"unsupported setting type {hint!r}")  # a bug in a Settings class


def _coerce_str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("expected a string or a list of strings")


def _threshold(value: Any) -> Threshold:
    if isinstance(value, bool):
        raise ValueError("expected a count such as 25 or a percentage such as \"10%\"")
    if isinstance(value, int) and value >= 0:
        return Threshold(value, False)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", value)
        if match:
            number = float(match.group(1))
            if match.group(2) and number > 100:
                raise ValueError("a percentage cannot exceed 100%")
            return Threshold(number, bool(match.group(2)))
    raise ValueError("expected a count such as 25 or a percentage such as \"10%\"")


def _check_values(config: Config, ctx: _Context) -> None:
    if not 1 <= config.state.history_days <= 3650:
        raise ctx.error("[state] history_days", "must be between 1 and 3650")
    t = config.target
    problem = token_problem(t.url)        # the URL makes the request line and the Host header
    if problem:
        raise ctx.error("[target] url", f"{t.url!r} {problem}; the SCIM base URL Split shows "
                                        "is plain ASCII without spaces (copy it again)")
    if not re.match(r"^https?://[^\s/]+", t.url):
        raise ctx.error("[target] url", "expected an http(s) URL such as https://host/scim/v2")
    if "@" in t.url.split("//", 1)[1].split("/", 1)[0]:
        raise ctx.error("[target] url", "do not put credentials in the URL; use token")
    parts = urlsplit(t.url)
    if parts.query or parts.fragment or t.url.endswith(("?", "#")):
        raise ctx.error("[target] url", "a SCIM base URL carries no query string or fragment "
                                        f"(requests are made below it); use "
                                        f"{parts._replace(query='', fragment='').geturl()}")
    host = parts.hostname or ""
    if t.url.startswith("http://") and not is_loopback(host):
        raise ctx.error("[target] url", "must use https:// (the token would cross the network "
                                        "in clear); http:// is accepted for a loopback address only")
    if t.rate_limit <= 0:
        raise ctx.error("[target] rate_limit", "must be positive")
    if not 1 <= t.concurrency <= 64:
        raise ctx.error("[target] concurrency", "must be between 1 and 64")
    if t.timeout <= 0:
        raise ctx.error("[target] timeout", "must be positive")
    if not 1 <= t.max_attempts <= 20:
        raise ctx.error("[target] max_attempts", "must be between 1 and 20")
    if t.dialect not in TARGET_DIALECTS:
        raise ctx.error("[target] dialect", f"{t.dialect!r} is not one of "
                                            f"{', '.join(TARGET_DIALECTS)}")
    if t.max_wait > dt.timedelta(hours=1):
        raise ctx.error("[target] max_wait", "must be at most 1h (a longer wait is a stalled "
                                             "cycle; the next cycle tries again)")
    if not 1 <= t.max_response_mb <= 4096:
        raise ctx.error("[target] max_response_mb", "must be between 1 and 4096")
    if t.ca_file is not None:
        from connectors.tls import tls_context
        try:
            tls_context(t.ca_file)          # read now: a bad bundle is a config error
        except SettingError as exc:
            raise ctx.error("[target] ca_file", exc.message)
    s = config.schedule
    for key in ("interval", "max_backoff"):
        value = getattr(s, key)
        if value is not None and value < dt.timedelta(seconds=1):
            raise ctx.error(f"[schedule] {key}", f"{format_duration(value)} is shorter than a "
                                                 "second; a schedule counts in seconds at least")
    if s.interval and s.cron:
        raise ctx.error("[schedule]", "set interval or cron, not both")
    if s.cron:
        from apscheduler.triggers.cron import CronTrigger
        try:
            CronTrigger.from_crontab(s.cron)
        except ValueError as exc:
            raise ctx.error("[schedule] cron", f"not a crontab expression: {exc}")
    if config.metrics.listen:
        listen = re.match(r"^[\w.\-\[\]:]+:(\d+)$", config.metrics.listen)
        if not listen:
            raise ctx.error("[metrics] listen", "expected host:port such as 127.0.0.1:9464")
        if not 1 <= int(listen.group(1)) <= 65535:
            raise ctx.error("[metrics] listen", f"port {listen.group(1)} is not a TCP port "
                                                "(1 to 65535)")



def secrets_of(config: Config) -> list[Secret]:
    """Every resolved secret of a config: the target token and the source's secrets."""
    found = [config.target.token] + [getattr(config.source.settings, name)
                                     for name in vars(config.source.settings)]
    return [s for s in found if isinstance(s, Secret) and s.resolved]

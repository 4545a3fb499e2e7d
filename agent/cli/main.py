"""Argument parsing and output. Everything else happens in ``agent/engine/cycle.py``.

Exit statuses (the contract in docs/cli.md): 0 ok; 1 fatal error; 2 changes pending
(``plan --detailed-exitcode``); 3 stopped by a safety guard; 4 finished with failed operations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from connectors.base import ConnectorError

from .. import __version__
from ..core.outcome import Outcome
from ..app import build_agent
from ..engine.checks import token_days_left, token_warning
from ..engine.cycle import Agent, AgentError, PlanResult, SyncResult
from ..config import Config, ConfigError, config_path, load, secrets_of
from ..core.plan import Op, OpKind, Plan
from ..store.state import State, StateError

log = logging.getLogger("agent")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_GUARD, EXIT_FAILED_OPS = 0, 1, 2, 3, 4
_EXIT_OF = {Outcome.OK: EXIT_OK, Outcome.PARTIAL: EXIT_FAILED_OPS, Outcome.GUARD: EXIT_GUARD,
            Outcome.ERROR: EXIT_ERROR}


def exit_code(outcome: Outcome) -> int:
    """The process exit status of a sync that ended as ``outcome`` (docs/cli.md)."""
    return _EXIT_OF[outcome]


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scim-agent",
        description="Sync users and groups from your directory to Split over SCIM 2.0.",
        epilog="Exit statuses: 0 ok, 1 error, 2 changes pending (plan --detailed-exitcode), "
               "3 stopped by a safety guard, 4 some operations failed.")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $SCIM_AGENT_CONFIG, then "
                             "/etc/scim-agent/config.toml)")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging, and tracebacks on errors")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default) or JSON objects, on stderr")
    parser.add_argument("--version", action="version", version=f"scim-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("plan", help="show what a sync would change; sends nothing",
                            description="Read the source, compare it with the snapshot and print "
                                        "the changes a sync would make. Writes nothing and sends "
                                        "nothing to the target; needs no SCIM token.")
    _output_option(p)
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 2 when changes are pending, 0 when there are none")

    s = commands.add_parser("sync", help="run one sync cycle now",
                            description="Read, plan, check the safety guards and apply the "
                                        "changes to the SCIM target.")
    s.add_argument("--dry-run", action="store_true", help="only show the plan (same as plan)")
    s.add_argument("--only", nargs="+", metavar="KEY", default=[],
                   help="limit the sync to these users (userName) or groups (displayName)")
    s.add_argument("--allow-mass-deactivation", action="store_true",
                   help="let this one run through the safety guard (deactivation threshold, "
                        "empty source)")
    s.add_argument("--reconcile", action="store_true",
                   help="re-read Split first and put right what was changed there by hand "
                        "(one paged read of all users and groups)")
    _output_option(s)

    commands.add_parser("run", help="run as a daemon, syncing on the configured schedule",
                        description="Sync on [schedule] until SIGTERM or SIGINT; SIGHUP reloads "
                                    "the config. Meant to run under systemd (Type=notify).")

    st = commands.add_parser("status", help="show recent runs, failing objects and token age",
                             description="Read the snapshot and report the last runs, the "
                                         "objects that keep failing and the token's age.")
    _output_option(st)

    commands.add_parser("check", help="test the config and the connections, read-only",
                        description="Validate the config, then connect to the source and the "
                                    "target with their credentials and report what they hold. "
                                    "Changes nothing.")
    return parser


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people (default), json for scripts")


# ---------------------------------------------------------------------------------------------
# Logging


class _Redact(logging.Filter):
    """Last line of defence: a secret value never reaches a log line, whatever code logged it.
    One instance, installed by :func:`setup_logging`; a reloaded config adds its secrets."""

    def __init__(self, secrets: Sequence[str] = ()):
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Sequence[str]) -> None:
        # very short values would redact ordinary words; such a secret is no secret anyway
        self.secrets = sorted(set(self.secrets) | {s for s in secrets if len(s) >= 4},
                              key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "[redacted]")
                record.msg, record.args = message, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the log call."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_REDACT = _Redact()


def add_secrets_to_redact(secrets: Sequence[str]) -> None:
    _REDACT.add(secrets)


def setup_logging(level: int, fmt: str) -> logging.Handler:
    handler = _StderrHandler()
    handler.addFilter(_REDACT)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):       # journald stamps lines itself
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler", "msal", "ldap3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


def config_secrets(config: Config) -> list[str]:
    return [s.reveal() for s in secrets_of(config)]


# ---------------------------------------------------------------------------------------------
# Output


class Style:
    def __init__(self, stream):
        self.on = (hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
                   and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


_SIGN = {
    OpKind.CREATE_USER: ("+", "32", "create user"),
    OpKind.REACTIVATE_USER: ("+", "32", "reactivate user"),
    OpKind.UPDATE_USER: ("~", "33", "update user"),
    OpKind.DEACTIVATE_USER: ("-", "31", "deactivate user"),
    OpKind.CREATE_GROUP: ("+", "32", "create group"),
    OpKind.UPDATE_GROUP: ("~", "33", "rename group"),
    OpKind.DELETE_GROUP: ("-", "31", "delete group"),
    OpKind.ADD_MEMBERS: ("+", "32", "add to group"),
    OpKind.REMOVE_MEMBERS: ("-", "31", "remove from group"),
}


def _q(value: str | None) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


def render_plan(plan: Plan, stream=None, guard_reason: str = "") -> str:
    style = Style(stream or sys.stdout)
    lines: list[str] = []
    for op in plan.ops:
        sign, colour, label = _SIGN[op.kind]
        head = f"{style(sign, colour)} {label} {style(op.key, '1')}"
        if op.reason:
            head += f"  ({op.reason})"
        if op.refused:
            head = f"{style('!', '31;1')} {label} {op.key}: refused, not sent: {op.refused}"
        lines.append(head)
        lines.extend(_details(op))
    for problem in plan.problems:
        lines.append(f"{style('!', '33;1')} {problem.kind} {problem.key}: not pushed: {problem.reason}")
    if lines:
        lines.append("")
    lines.append(summary_line(plan))
    if guard_reason:
        lines.append(style(f"Safety guard: {guard_reason}. A sync would stop here (exit 3) "
                           "unless run with --allow-mass-deactivation.", "31;1"))
    return "\n".join(lines)


def _details(op: Op) -> list[str]:
    if op.kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP):
        return [f"      {k}: {_q(v)}" for k, v in op.attributes.items()]
    if op.changed:
        return [f"      {k}: {_q(old)} -> {_q(new)}" for k, (old, new) in op.changed.items()]
    if op.member_keys:
        shown = list(op.member_keys[:20])
        more = len(op.member_keys) - len(shown)
        return [f"      {m}" for m in shown] + ([f"      ... and {more} more"] if more else [])
    return []


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    notes = []
    if plan.refused:
        notes.append(f"{len(plan.refused)} refused (not sent)")
    if plan.problems:
        notes.append(f"{len(plan.problems)} source object(s) not pushed")
    tail = f" {'; '.join(notes).capitalize()}." if notes else ""
    if not plan.sendable:
        # plan compares with the snapshot of what was pushed, not with Split itself
        return ("No changes: everything the source holds was pushed, as far as the snapshot "
                "knows (sync --reconcile re-reads Split)." + tail)
    return (f"Plan: users {s['create_user']} to create, {s['update_user']} to update, "
            f"{s['reactivate_user']} to reactivate, {s['deactivate_user']} to deactivate; "
            f"groups {s['create_group']} to create, {s['update_group']} to rename, "
            f"{s['delete_group']} to delete; members +{s['add_members']} -{s['remove_members']}."
            + tail)


def plan_json(plan: Plan, guard_reason: str = "") -> str:
    out = plan.to_dict()
    if guard_reason:
        out["guard"] = guard_reason
    return json.dumps(out, indent=2, ensure_ascii=False)


class Progress:
    """``applying 120/5000`` on a terminal; a log line every 10% otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_step = -1
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        if total < 20:
            return
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw > 0.1 or done == total:
                self.last_draw = now
                self.stream.write(f"\rapplying {done}/{total} operations")
                if done == total:
                    self.stream.write("\n")
                self.stream.flush()
        else:
            step = done * 10 // total
            if step != self.last_step:
                self.last_step = step
                log.info("applied %d of %d operations", done, total)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_plan(agent: Agent, args) -> int:
    result: PlanResult = agent.plan()
    reason = result.guard.reason if result.guard else ""
    if args.output == "json":
        print(plan_json(result.plan, reason))
    else:
        print(render_plan(result.plan, sys.stdout, reason))
    if getattr(args, "detailed_exitcode", False) and result.plan.sendable:
        return EXIT_CHANGES
    return EXIT_OK


def cmd_sync(agent: Agent, args) -> int:
    if args.dry_run:
        args.detailed_exitcode = False
        return cmd_plan(agent, args)
    result: SyncResult = agent.sync(only=args.only,
                                    allow_mass_deactivation=args.allow_mass_deactivation,
                                    reconcile=args.reconcile, progress=Progress())
    if args.output == "json":
        print(json.dumps(sync_json(result), indent=2, ensure_ascii=False))
    else:
        print_sync(result)
    return exit_code(result.outcome)


def sync_json(result: SyncResult) -> dict:
    out: dict = {"exit_code": exit_code(result.outcome), "message": result.message,
                 "duration_seconds": round(result.duration, 3), "adopted": result.adopted}
    if result.plan is not None:
        out["plan"] = result.plan.to_dict()
    if result.target_read is not None:
        out["target_read"] = {"adopted": result.target_read.adopted,
                              "drifted": result.target_read.drifted,
                              "vanished": result.target_read.vanished}
    if result.report is not None:
        out["applied"] = result.report.counts()
        out["applied_changes"] = [{"op": op.kind.value, "key": op.key}
                                  for op in result.report.applied]
        out["failed"] = [{"op": op.kind.value, "key": op.key, "error": error}
                         for op, error in result.report.failed]
    if result.guard:
        out["guard"] = result.guard.reason
    if result.warnings:
        out["warnings"] = result.warnings
    return out


APPLIED_SHOWN = 200


def print_sync(result: SyncResult) -> None:
    """What happened, object by object, then one line of counts; errors once, on stderr."""
    style = Style(sys.stdout)
    if result.guard and result.plan is not None:
        print(render_plan(result.plan, sys.stdout))
        print(style(f"Stopped by the safety guard: {result.guard.reason}. Nothing was applied. "
                    "Check the source; if this is intended, run once with "
                    "--allow-mass-deactivation.", "31;1"))
        return
    if result.report is None:
        print(style(f"error: {result.message}", "31;1"), file=sys.stderr)
        return
    report = result.report
    read = result.target_read
    if read is not None:
        for label, keys in (("adopted from Split", read.adopted),
                            ("changed in Split by hand, put right", read.drifted),
                            ("gone from Split, created again", read.vanished)):
            for key in keys[:20]:
                print(f"= {label}: {key}")
            if len(keys) > 20:
                print(f"= ... and {len(keys) - 20} more {label}")
    for op in report.applied[:APPLIED_SHOWN]:
        sign, colour, label = _SIGN[op.kind]
        members = f" ({len(op.members)} members)" if op.members else ""
        print(f"{style(sign, colour)} {label} {op.key}{members}")
    if len(report.applied) > APPLIED_SHOWN:
        print(f"  ... and {len(report.applied) - APPLIED_SHOWN} more (--output json lists all)")
    for op, error in report.failed:
        if report.fatal and error == report.fatal:
            continue                                   # said once, below
        print(f"{style('!', '31;1')} {_SIGN[op.kind][2]} {op.key}: {error}")
    if report.applied or not report.failed:
        print(f"Applied {len(report.applied)} change(s)" if report.applied
              else "Nothing to apply: the target already matches the source.")
    failed = [f for f in report.failed if f[1] != report.fatal]
    if failed:
        print(style(f"{len(failed)} change(s) failed; they are retried next cycle "
                    "('scim-agent status' lists them).", "33"))
    if report.fatal:
        print(style(f"error: {report.fatal}", "31;1"), file=sys.stderr)
        print("Stopped: nothing further was sent.", file=sys.stderr)
    for warning in result.warnings:
        print(style(f"warning: {warning}", "33"), file=sys.stderr)


def cmd_check(agent: Agent, args) -> int:
    style = Style(sys.stdout)
    ok = True
    for what, good, detail in agent.check():
        ok &= good
        if not good:
            mark = style("FAIL", "31;1")
        elif detail.startswith("warning: "):
            mark, detail = style("warn", "33"), detail[len("warning: "):]
        else:
            mark = style("ok  ", "32")
        print(f"{mark} {what}: {detail}")
    return EXIT_OK if ok else EXIT_ERROR


def cmd_status(config: Config, args) -> int:
    path = config.state.path
    report: dict = {"state": str(path), "size_bytes": None, "counts": {}, "runs": [],
                    "failures": [], "held": None, "next_run": None, "consecutive_failures": 0,
                    "last_full_read": None, "token_days_left": token_days_left(config),
                    "token_warning": token_warning(config) or None}
    if not path.exists():
        report["note"] = "no snapshot yet: run 'scim-agent sync' first"
    else:
        with State.open(path, lock=False, create=False) as state:
            report["counts"] = state.counts()
            report["runs"] = [vars(r) for r in state.runs(10)]
            report["failures"] = state.failures()
            report["held"] = state.meta.held() or None
            report["next_run"] = _local(state.meta.next_run())
            report["consecutive_failures"] = state.meta.consecutive_failures()
            report["last_full_read"] = _utc(state.meta.last_full_read())
        report["size_bytes"] = path.stat().st_size
    if args.output == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return EXIT_OK
    if report.get("note"):
        print(f"Snapshot: {path}: {report['note']}")
    else:
        print(f"Snapshot: {path} ({report['size_bytes']} bytes)")
    counts = report.get("counts") or {}
    if counts:
        print(f"Managed: {counts['users']} users ({counts['active_users']} active), "
              f"{counts['groups']} groups, {counts['memberships']} memberships")
    if report.get("held"):
        print(f"Pushing is HELD: {report['held']}")
    if report.get("next_run"):
        print(f"Next run: {report['next_run']}")
    if report["token_warning"]:
        print(f"Token: {report['token_warning']}")
    elif report["token_days_left"] is not None:
        print(f"Token: {report['token_days_left']} days left")
    if report["consecutive_failures"]:
        print(f"Consecutive failed cycles: {report['consecutive_failures']}")
    runs = report.get("runs") or []
    if runs:
        print("\nLast runs:")
        for r in runs:
            print("  " + _run_line(r))
    failures = report.get("failures") or []
    if failures:
        print("\nFailing objects:")
        for f in failures:
            print(f"  {f['kind']} {f['key']}: {f['op']} failed {f['count']}x, last {f['last_seen']}: "
                  f"{f['error']}")
    return EXIT_OK


def _local(moment: dt.datetime | None) -> str | None:
    return moment.astimezone().isoformat(timespec="seconds") if moment else None


def _utc(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment else None


def _run_line(run: dict) -> str:
    """``<started> <mode> <outcome> <duration>  <what was applied, or why it stopped>``."""
    duration = f"{run['duration']:.1f}s" if run["duration"] is not None else "-"
    head = f"{run['started']}  {run['mode']:<5} {run['outcome'] or 'running':<8} {duration:>7}  "
    if run["outcome"] is None:
        return head + "in progress"
    applied = ", ".join(f"{n} {k}" for k, n in run["counts"].items())
    if run["outcome"] == "ok":
        return head + (applied or "no changes")
    parts = [f"applied {applied}" if applied else "", f"{run['failed']} failed" if run["failed"]
             else "", run["message"] if run["outcome"] != "partial" else ""]
    return head + "; ".join(p for p in parts if p)


def cmd_run(config: Config, args, config_file) -> int:
    from ..service.daemon import run_daemon
    return run_daemon(config, config_file, log_format=args.log_format, debug=args.debug)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in ("plan", "status", "check") or getattr(args, "dry_run", False)
    level = logging.DEBUG if args.debug else (logging.WARNING if quiet else logging.INFO)
    setup_logging(level, args.log_format)
    path = config_path(args.config)
    try:
        needs_token = args.command in ("sync", "run", "check") and not getattr(args, "dry_run", False)
        config = load(path, resolve_target_secrets=needs_token,
                      resolve_source_secrets=args.command != "status")
        add_secrets_to_redact(config_secrets(config))
        if needs_token and config.target.token is None:
            raise ConfigError(f"{config.path}: [target] token: is required for {args.command}")
        if args.command == "status":
            return cmd_status(config, args)
        if args.command == "run":
            return cmd_run(config, args, path)
        agent = build_agent(config)
        return {"plan": cmd_plan, "sync": cmd_sync, "check": cmd_check}[args.command](agent, args)
    except (ConfigError, StateError, AgentError, ConnectorError) as exc:
        if args.debug:
            log.exception("error")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): not an error worth a message
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

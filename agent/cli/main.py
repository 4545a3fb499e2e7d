"""The command line's edge: parse the arguments, run the command, turn its outcome into an
exit status, and turn every expected error into one line on stderr.

Exit statuses (the contract in docs/cli.md): 0 ok; 1 fatal error, and a command line argparse
refuses (never 2, which scripts read as "changes pending"); 2 changes pending
(``plan --detailed-exitcode``); 3 stopped by a safety guard; 4 finished with failed operations;
5 applied, with refusals; 130 interrupted. The global options (``--config``, ``--debug``,
``--log-format``) are accepted before or after the command. What is printed comes from
``render`` and ``status``; logging and redaction from ``logs``; with ``--log-format json``
every line on stderr, the final error included, is a JSON object (``stderr``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import json
import logging
import os
import select
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from connectors.base import ConnectorError
from connectors.redaction import printable

from .. import __version__
from ..config import Config, ConfigError, config_path, load
from ..core.outcome import Outcome
from ..app import build_agent
from ..engine.binding import check_binding
from ..engine.checks import Check
from ..engine.cycle import Agent, PlanResult, SyncResult
from ..engine.saved import PlanFileError, read_plan, write_plan
from ..store.sqlite import describe as describe_store_failure
from ..store.state import StateError
from .explain import cmd_explain
from .logs import redact_secrets_of, setup_logging
from .redacted import redacted_output
from .render import Progress, Style, plan_json, print_sync, render_plan, sync_json
from .history import history_report, print_history
from .status import RUNS_READ, print_status, status_report
from .stderr import json_stderr

log = logging.getLogger("agent")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_GUARD, EXIT_FAILED_OPS, EXIT_REFUSED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130      # the shell's convention for a run stopped by SIGINT
EXIT_USAGE = EXIT_ERROR     # a wrong command line is an error; argparse's own 2 means "changes"
_EXIT_OF = {Outcome.OK: EXIT_OK, Outcome.REFUSED: EXIT_REFUSED, Outcome.PARTIAL: EXIT_FAILED_OPS,
            Outcome.FAILED: EXIT_FAILED_OPS,
            Outcome.GUARD: EXIT_GUARD, Outcome.INTERRUPTED: EXIT_INTERRUPTED,
            Outcome.DECLINED: EXIT_OK, Outcome.ERROR: EXIT_ERROR}


def exit_code(outcome: Outcome) -> int:
    """The process exit status of a sync that ended as ``outcome`` (docs/cli.md)."""
    return _EXIT_OF[outcome]


# ---------------------------------------------------------------------------------------------
# Parser


class UsageError(Exception):
    """The command line is wrong (an unknown option, a missing or bad value)."""

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised (and ends as exit 1 in :func:`main`)
    instead of exiting 2, the status ``plan --detailed-exitcode`` gives to pending changes."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')", self.format_usage())


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """``--config``, ``--debug`` and ``--log-format``, before the command and after it. After
    it, they default to nothing, so that only what is given there replaces the first ones."""
    group = parser.add_argument_group("global options (before or after the command)")

    def default(value):
        return argparse.SUPPRESS if after_command else value

    group.add_argument("--config", metavar="PATH", default=default(None),
                       help="config file (default: $SCIM_AGENT_CONFIG, then "
                            "/etc/scim-agent/config.toml)")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="debug logging, and tracebacks on errors")
    group.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                       help="log lines as text (default) or JSON objects, on stderr (the "
                            "final error too)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scim-agent",
        description="Sync users and groups from your directory to Split over SCIM 2.0.",
        epilog="Exit statuses: 0 ok, 1 error (a wrong command line too), 2 changes pending "
               "(plan --detailed-exitcode), 3 stopped by a safety guard, 4 some operations "
               "failed, 5 applied with refusals, 130 interrupted.")
    _global_options(parser, after_command=False)
    parser.add_argument("--version", action="version", version=f"scim-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("plan", help="show what a sync would change; sends nothing",
                            description="Read the source, compare it with the snapshot and print "
                                        "the changes a sync would make. Writes nothing and sends "
                                        "nothing to the target; needs no SCIM token.")
    _output_option(p)
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 2 when changes are pending, 0 when there are none")
    p.add_argument("--refresh", action="store_true",
                   help="read Split too (read-only, paged) and plan from what it holds: shows "
                        "drift made there by hand, and what a first sync adopts (needs the token)")
    p.add_argument("--out", metavar="FILE", type=Path,
                   help="also save the plan, with what it was computed from, for "
                        "'sync --plan FILE' (written 0600)")
    p.add_argument("--explain", metavar="KEY",
                   help="explain one user or group (userName, e-mail, group name, source id "
                        "or DN): its source record, scope, attributes and planned changes")

    s = commands.add_parser("sync", help="run one sync cycle now",
                            description="Read, plan, check the safety guards and apply the "
                                        "changes to the SCIM target.")
    s.add_argument("--dry-run", action="store_true",
                   help="only show the plan (same as plan; with --reconcile, plan --refresh)")
    s.add_argument("--plan", metavar="FILE", type=Path, dest="plan_file",
                   help="apply exactly the plan 'plan --out FILE' saved, or nothing if the "
                        "source, the snapshot or Split moved since")
    s.add_argument("--yes", "-y", action="store_true",
                   help="apply without asking (on a terminal, sync shows the plan and asks "
                        "first; without a terminal it never asks)")
    s.add_argument("--only", nargs="+", metavar="KEY", default=[],
                   help="limit the sync to these users (userName) or groups (displayName)")
    s.add_argument("--allow-mass-deactivation", action="store_true",
                   help="let this one run through the safety guards (deactivation and group "
                        "thresholds, an empty source, a target that looks emptied)")
    s.add_argument("--rebind-target", action="store_true",
                   help="the snapshot was made for another [target] url: forget that "
                        "organisation's ids and adopt what this one holds")
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

    h = commands.add_parser("history", help="every change sent for one user or group",
                            description="List the changes sent for one user (userName) or "
                                        "group (name), or a source id, newest first: when, by "
                                        "which run, and what became of each. Reads only the "
                                        "snapshot; [state] history_days says how far back.")
    h.add_argument("key", metavar="KEY", help="a userName, a group name or a source id "
                                              "(case-insensitive; past names too)")
    h.add_argument("--limit", type=int, default=200, help="at most this many changes "
                                                          "(default 200)")
    _output_option(h)

    c = commands.add_parser("check", help="test the config and the connections, read-only",
                            description="Validate the config, then connect to the source and "
                                        "the target with their credentials and report what "
                                        "they hold. Changes nothing.")
    c.add_argument("--config-only", action="store_true",
                   help="connect to nothing: check only what a reload of the service checks "
                        "(the config, every secret it names, the snapshot's target); the "
                        "units run this before they signal the agent, so that 'systemctl "
                        "reload' fails on a config the agent would refuse")
    for command in commands.choices.values():
        _global_options(command, after_command=True)
    return parser


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people (default), json for scripts")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_plan(agent: Agent, args) -> int:
    if getattr(args, "explain", None):
        return cmd_explain(agent, args)
    out_file = getattr(args, "out", None)
    result: PlanResult = agent.plan(refresh=_refresh(args), basis=out_file is not None)
    reason = result.guard.reason if result.guard else ""
    if out_file is not None:
        write_plan(out_file, result.plan.to_dict(), result.basis)
        print(f"Saved the plan to {out_file}; apply exactly it with: scim-agent sync --plan "
              f"{out_file}", file=sys.stderr)
    if args.output == "json":
        print(plan_json(result.plan, reason, result.target_read))
    else:
        print(render_plan(result.plan, sys.stdout, reason, result.target_read))
    if getattr(args, "detailed_exitcode", False) and result.plan.sendable:
        return EXIT_CHANGES
    return EXIT_OK


def _refresh(args) -> bool:
    """``plan --refresh``, and ``sync --reconcile --dry-run`` which is the same thing."""
    return bool(getattr(args, "refresh", False) or
                (getattr(args, "dry_run", False) and getattr(args, "reconcile", False)))


def cmd_sync(agent: Agent, args) -> int:
    if args.dry_run:
        args.detailed_exitcode = False
        return cmd_plan(agent, args)
    saved = read_plan(args.plan_file) if args.plan_file is not None else None
    if saved is not None and (args.only or args.reconcile):
        raise PlanFileError("--plan applies exactly the saved plan: it cannot be combined "
                            "with --only or --reconcile")
    ask = None if args.yes or saved is not None or args.output == "json" else _prompt(agent)
    with stop_on_interrupt() as stop:
        result: SyncResult = agent.sync(only=args.only,
                                        allow_mass_deactivation=args.allow_mass_deactivation,
                                        reconcile=args.reconcile, progress=Progress(),
                                        rebind_target=args.rebind_target, stop=stop,
                                        saved=saved, confirm=ask)
    if args.output == "json":
        print(json.dumps(sync_json(result, exit_code(result.outcome)), indent=2,
                         ensure_ascii=False))
    else:
        print_sync(result)
    return exit_code(result.outcome)


PROMPT_TIMEOUT = 600.0      # seconds: the snapshot is locked while sync asks (the daemon waits)


def _prompt(agent: Agent):
    """On a terminal, show the plan and ask before anything is sent; None otherwise (cron,
    the daemon, a pipe: they never ask). Ctrl-C at the question, end of input, and no answer
    within PROMPT_TIMEOUT all mean no: the question holds the snapshot lock, and a prompt
    left open in a forgotten terminal must not stop the daemon's cycles for good."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def confirm(plan) -> bool:
        # Ctrl-C from here on is a no; taken before the question shows, so that one pressed
        # as soon as it does is never the sync's "stop sending" instead
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            print(render_plan(plan, sys.stdout))
            # the question on stdout, where the plan is (input() would put it on stderr)
            print(f"\nApply these {len(plan.sendable)} change(s) to "
                  f"{agent.config.target.url}? Type yes to apply: ", end="", flush=True)
            answer = answer_within(sys.stdin, PROMPT_TIMEOUT)
        except (KeyboardInterrupt, EOFError):
            answer = ""
        finally:
            signal.signal(signal.SIGINT, previous)
        if answer is None:
            print(f"\nNo answer within {PROMPT_TIMEOUT / 60:g} minutes. Nothing was applied "
                  "(a sync does not hold the snapshot longer while it waits; 'plan --out "
                  "FILE', then 'sync --plan FILE', reviews at leisure).")
            return False
        if answer.strip().lower() not in ("y", "yes"):
            print("\nNothing was applied." if not answer else "Nothing was applied.")
            return False
        print()
        return True
    return confirm


def answer_within(stream, timeout: float) -> str | None:
    """A line typed on ``stream`` within ``timeout`` seconds, or None; EOFError at its end.

    A signal (Ctrl-C: a no) ends the wait at once wherever it lands: Python runs its handler
    only once the wait returns, and a signal taken just before the wait began, or by another
    thread, does not make it return; so the wait also watches the signal wakeup pipe. (It
    used to wait out the whole timeout, one time in twenty on a busy machine.)"""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    try:
        previous = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    except ValueError:              # not the main thread: its signals are not ours to take
        previous = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([stream, wake_read], [], [], left)
            if stream in ready:
                break
            if wake_read in ready:  # the handler runs now; one that does not raise: wait on
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
    finally:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(wake_read)
        os.close(wake_write)
    line = stream.readline()
    if not line:
        raise EOFError
    return line


@contextlib.contextmanager
def stop_on_interrupt():
    """Ctrl-C during a sync asks it to stop as the daemon's SIGTERM does: the requests in
    flight finish and are recorded, nothing new is sent, and the run ends as interrupted with
    what it applied. A second Ctrl-C quits at once (the snapshot stays consistent)."""
    stop = threading.Event()

    def interrupted(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping: the requests in flight finish, nothing new is sent "
              "(Ctrl-C again to quit at once)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_check(agent: Agent, args) -> int:
    return _print_checks(agent.check())


def cmd_check_config(config: Config) -> int:
    """What the daemon checks when it is told to reload (``Daemon._load_new_config``), short
    of comparing with the config it runs: the config loaded, every secret found, the snapshot
    bound to this target. Nothing is connected to, nothing written."""
    problem = check_binding(config.state.path, config.target.url)
    return _print_checks([("config", True, str(config.path)),
                          ("snapshot", not problem, problem or str(config.state.path))])


def _print_checks(checks: Iterable[Check]) -> int:
    """One line per check (what, good, detail), marked ok, warn or FAIL; exit 1 if any failed."""
    style = Style(sys.stdout)
    ok = True
    for what, good, detail in checks:
        ok &= good
        if not good:
            mark = style("FAIL", "31;1")
        elif detail.startswith("warning: "):
            mark, detail = style("warn", "33"), detail[len("warning: "):]
        else:
            mark = style("ok  ", "32")
        print(f"{mark} {what}: {printable(detail)}")
    return EXIT_OK if ok else EXIT_ERROR


def cmd_status(config: Config, args) -> int:
    if args.output == "json":
        print(json.dumps(status_report(config), indent=2, ensure_ascii=False))
    else:
        print_status(status_report(config, runs=RUNS_READ))
    return EXIT_OK


def cmd_history(config: Config, args) -> int:
    report = history_report(config, args.key, args.limit)
    if args.output == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_history(report)
    return EXIT_OK


def cmd_run(config: Config, args, config_file) -> int:
    from ..service.daemon import run_daemon
    # the daemon keeps every reloaded config's secrets out of the log through this callback
    return run_daemon(config, config_file, on_config=redact_secrets_of)


def run() -> NoReturn:
    """The ``scim-agent`` command: :func:`main`, then the process ends.

    It ends as Python ends one, output flushed and every exit handler run (logging's
    included), except that the objects still alive are not freed one by one: the operating
    system takes the memory back at once. A plan of 100 000 users leaves some millions of
    them, and freeing them was a tenth of its run. Only when no other thread is alive:
    Python would wait for one."""
    code = main()
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()         # first, as Python does: what they print is flushed
    for stream in (sys.stdout, sys.stderr):
        if stream is None:          # (started with it closed: `>&-`)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):   # the reader went away (`| head`), as main() allows
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with redacted_output():          # whatever is printed from here on, no secret gets out
        log_format = _log_format_in(argv)   # known before parsing: a usage error obeys it too
        setup_logging(logging.WARNING, log_format)
        with json_stderr(log_format == "json"):
            try:
                args = _parse(build_parser(), argv)
            except UsageError as exc:
                if log_format != "json":
                    print(exc.usage, end="", file=sys.stderr)
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            with json_stderr(args.log_format == "json"):     # also when abbreviated (--log-f)
                return _run(args)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parse_args``, except that an unknown option is blamed on the command it follows, with
    the nearest option that command knows."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices[args.command]
        options = {o.lstrip("-"): o for a in command._actions for o in a.option_strings
                   if o.startswith("--")}
        given = extra[0].split("=", 1)[0]
        near = difflib.get_close_matches(given.lstrip("-"), options, n=1, cutoff=0.7) \
            if given.startswith("--") else []
        command.error(f"unrecognized arguments: {' '.join(extra)}"
                      + (f"; did you mean {options[near[0]]}?" if near else ""))
    return args


def _log_format_in(argv: Sequence[str]) -> str:
    """The ``--log-format`` the command line asks for, wherever it stands (the last wins)."""
    found = "text"
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word.startswith("--log-format="):
            found = word.split("=", 1)[1]
        elif word == "--log-format" and i + 1 < len(argv):
            found = argv[i + 1]
    return found if found in ("text", "json") else "text"


def _run(args) -> int:
    quiet = args.command in ("plan", "status", "check", "history") or getattr(args, "dry_run",
                                                                               False)
    level = logging.DEBUG if args.debug else (logging.WARNING if quiet else logging.INFO)
    setup_logging(level, args.log_format)
    path = config_path(args.config)
    try:
        needs_token = (args.command in ("sync", "run", "check")
                       and not getattr(args, "dry_run", False)) or _refresh(args)
        config = load(path, resolve_target_secrets=needs_token,
                      resolve_source_secrets=args.command not in ("status", "history"))
        redact_secrets_of(config)
        if needs_token and config.target.token is None:
            raise ConfigError(f"{config.path}: [target] token: is required for {args.command}")
        if args.command == "status":
            return cmd_status(config, args)
        if args.command == "history":
            return cmd_history(config, args)
        if args.command == "run":
            return cmd_run(config, args, path)
        if args.command == "check" and args.config_only:
            return cmd_check_config(config)
        agent = build_agent(config)
        return {"plan": cmd_plan, "sync": cmd_sync, "check": cmd_check}[args.command](agent, args)
    except (ConfigError, StateError, ConnectorError, PlanFileError) as exc:
        if args.debug:
            log.exception("error")
        print(f"error: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.DatabaseError as exc:      # met reading the snapshot (a damaged page...)
        if args.debug:
            log.exception("error")
        where = config.state.path if "config" in locals() else path
        print(f"error: {printable(describe_store_failure(where, exc) or f'{where}: {exc}')}",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted at once: what was confirmed is recorded; run 'scim-agent status' to "
              "see it, and sync again to carry on", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): not an error worth a message
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            traceback.print_exc()          # through the redacting stderr
            return EXIT_ERROR
        print(f"error: unexpected {type(exc).__name__}: {printable(exc)} (run with --debug for "
              "details)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    run()

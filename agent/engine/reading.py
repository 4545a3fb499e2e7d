"""The reading policy: a full read, or a change set on top of the last complete view.

A source whose interface declares a change feed (``supports_changes``) is read from its stored
cursor unless a full read is due (``full_read_every``), its cursor expired, or the ``[source]``
settings changed since the view was read (the fingerprint). Whatever was read, the planner
gets a complete view. The view and its cursor are stored only after a cycle that succeeded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from connectors.base import CursorExpired, Directory, Source

from ..config import Config
from ..core.mapping import MappingRules
from ..core.model import digest_of
from ..store.state import State

log = logging.getLogger(__name__)


@dataclass
class ReadResult:
    view: Directory
    full: bool                      # a complete read (False: a change set applied to the view)
    changes: Directory | None = None
    removed_users: frozenset[str] = frozenset()
    removed_groups: frozenset[str] = frozenset()


class SourceReader:
    def __init__(self, config: Config, rules: MappingRules, make_source: Callable[[], Source],
                 now: Callable[[], dt.datetime]):
        self.config = config
        self.rules = rules
        self.make_source = make_source
        self.now = now
        self.source_cls = config.source.source_class

    def read(self, state: State | None) -> ReadResult:
        """A complete view of the source. Raises SourceError rather than return a partial one."""
        source = self.make_source()
        try:
            view = self._stored_view(state)
            if view is not None:
                try:
                    changes = source.read_changes(view.cursor, view)
                except CursorExpired as exc:
                    log.info("change cursor no longer valid (%s); reading the source in full", exc)
                else:
                    log.info("read %d change(s) from the source since the last cycle", len(changes))
                    return ReadResult(changes.apply_to(view), full=False,
                                      changes=Directory(changes.users, changes.groups, changes.cursor),
                                      removed_users=changes.removed_users,
                                      removed_groups=changes.removed_groups)
            directory = source.read()
            log.info("read %d users and %d groups from the %s source", len(directory.users),
                     len(directory.groups), self.config.source.type)
            return ReadResult(directory, full=True)
        finally:
            source.close()

    def save(self, state: State, read: ReadResult) -> None:
        """After a cycle that succeeded: the view and its cursor, in one transaction."""
        if read.view.cursor is None:
            return
        state.save_source_view(read.view, self.fingerprint(), read.full, changed=read.changes,
                               removed_users=read.removed_users,
                               removed_groups=read.removed_groups)

    def _stored_view(self, state: State | None) -> Directory | None:
        if state is None or not self.source_cls.supports_changes:
            return None
        every = self.config.source.settings.full_read_every
        if state.meta.source_config() != self.fingerprint():
            log.info("the [source] settings changed since the last read; reading in full")
            return None
        last_full = state.meta.last_full_read()
        if last_full is None:
            return None
        age = self.now() - last_full
        if age >= every:
            log.info("a full read is due (last one %s ago)", str(age).split(".")[0])
            return None
        view = state.source_view()
        return view if view is not None and view.cursor else None

    def fingerprint(self) -> str:
        """Changes whenever the source's config does (type, settings, the attributes read),
        so a view read under an old filter or base, or without an attribute a new mapping or
        scope rule reads, is never extended by change reads under the new one. Expressions and
        scope rules themselves apply to the stored view: changing them needs no re-read."""
        source = self.config.source
        settings = sorted((f.name, repr(getattr(source.settings, f.name)))
                          for f in dataclasses.fields(source.settings))   # a Secret shows its origin
        return digest_of([source.type, settings, self.rules.raw_attributes()])

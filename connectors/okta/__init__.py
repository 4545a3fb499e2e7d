"""Okta source (``[source] type = "okta"``), split by job:

- :mod:`.settings`: the ``[source]`` keys and ``Settings.validate()`` (run at config load);
- :mod:`.auth`: API token or OAuth service app (``private_key_jwt``), token cache and renewal;
- :mod:`.client`: the Management API on the shared HTTP path: errors, per-endpoint budgets,
  ``Link`` paging;
- :mod:`.records`: Okta JSON -> records; which statuses and groups are pushed;
- :mod:`.changes`: change reads (``lastUpdated`` filters) and the cursor;
- :mod:`.source`: :class:`OktaSource`, the Source protocol.
"""

from .source import OktaSource

__all__ = ["OktaSource"]

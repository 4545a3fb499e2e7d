"""LDAP and Active Directory source (ldap3).

Reads users and groups with paged searches and yields plain records keyed by a stable id.
The vendor traps handled here, each one a way a naive reader silently loses or mangles data
(details and sources: shared/reference/sources.md §3), and the module that handles each:

* size limits and range retrieval, one bound connection's searches: :mod:`.session`;
* failover across URLs, binding, refusing a password in clear: :mod:`.connect`;
* certificates always verified, against ``ca_file`` or the OS store only: :mod:`.tls`;
* ldap3's exceptions as one sentence in the error tree: :mod:`.errors`;
* stable ids (objectGUID is little-endian), the lean BER decoder: :mod:`.decoding`;
* DNs compared by value, not by spelling: :mod:`.dn`;
* filter values escaped, the AD matching rules: :mod:`.filters`;
* change cursors (``modifyTimestamp``, ``uSNChanged`` per controller) and, for AD, what left
  (tombstones with the Show Deleted control, moves out of the bases): :mod:`.changes`;
* paging that ends when the server says so, bounded by what it sent: :mod:`.session`;
* the ``[source]`` keys and the flavors' defaults: :mod:`.settings`;
* reads, change reads, ``check``, records and scope groups: :mod:`.source`.
"""

from __future__ import annotations

from .decoding import decode_entry, decode_id
from .dn import normalise_dn
from .filters import AD_DISABLED_FILTER
from .source import LdapSource
from .tls import verifying_context

__all__ = ["AD_DISABLED_FILTER", "LdapSource", "decode_entry", "decode_id", "normalise_dn",
           "verifying_context"]

"""Microsoft Entra ID source (``[source] type = "entra"``), split by job:

- :mod:`.settings`: the ``[source]`` keys and ``Settings.validate()`` (run at config load);
- :mod:`.auth`: msal sign-in with a client secret or a certificate, token errors explained;
- :mod:`.client`: Graph on the shared HTTP path: errors, pacing, ``@odata.nextLink`` paging;
- :mod:`.delta`: Graph JSON -> records, delta rounds merged, the delta cursor;
- :mod:`.source`: :class:`EntraSource`, the Source protocol.
"""

from .auth import Credential, load_certificate
from .client import odata_quote
from .delta import clean_attributes, merge_group_delta
from .source import EntraSource

__all__ = ["Credential", "EntraSource", "clean_attributes", "load_certificate",
           "merge_group_delta", "odata_quote"]

"""The one HTTP path every vendor shares (SCIM, Okta, Microsoft Graph).

- :mod:`.transport`: the client (TLS always verified, nothing from the environment, no
  redirects), the watchdog beat on every request and answer, transport failures by kind;
- :mod:`.waits`: the shared token bucket (a ceiling, and a pace below it learned from 429s),
  the servers' wait hints, the tenacity retry policy;
- :mod:`.path`: :class:`HttpClient`, which paces, authenticates, sends, classifies, retries
  and pages, asking a :class:`Vendor` only what its answers mean and an :class:`Auth` only
  how to sign a request in.

A fix to 429 handling, a transport error or a paging loop is made here, once.
"""

from .path import MAX_PAGES, PERMANENT_5XX, Auth, HeaderAuth, HttpClient, Request, Vendor
from .transport import Failure, HttpPolicy, build_client, os_reason, tls_context
from .waits import RateLimiter, parse_retry_after, quota_spent, retrying, server_wait_hint

__all__ = ["Auth", "Failure", "HeaderAuth", "HttpClient", "HttpPolicy", "MAX_PAGES",
           "PERMANENT_5XX", "RateLimiter", "Request", "Vendor", "build_client", "os_reason",
           "parse_retry_after", "quota_spent", "retrying", "server_wait_hint", "tls_context"]

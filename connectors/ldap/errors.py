"""ldap3's exceptions mapped onto the error tree (``connectors/base.py``), one sentence each.

A rejected bind is :class:`SourceAuthError` (trying the next server with the same password
would only lock the account sooner); everything else that stops a read is
:class:`SourceError` naming the server, and says what to check where that is knowable. The
sentences use plain words: Active Directory's bind sub-codes (``data 52e`` ...) and socket
errors are translated, LDAP result names are kept only in parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ldap3.core import exceptions as lx

from ..base import SettingError, SourceAuthError, SourceError
from .session import PAGED_RESULTS_OID

# The "data xxx" part of AD's invalidCredentials diagnostic (MS-ADTS / the well-known table
# of AcceptSecurityContext sub-codes; Samba sends the same ones).
_AD_BIND_PROBLEMS = {
    "525": "the account does not exist",
    "52e": "the password is wrong (or the account does not exist)",
    "530": "the account may not sign in at this time",
    "531": "the account may not sign in from this computer",
    "532": "the account's password has expired",
    "533": "the account is disabled",
    "701": "the account has expired",
    "773": "the account must change its password before it can sign in",
    "775": "the account is locked out",
}

_RESULT_PROBLEMS = {
    lx.LDAPInsufficientAccessRightsResult: "the bind account is not allowed to do that",
    lx.LDAPBusyResult: "the server is busy",
    lx.LDAPUnavailableResult: "the server is unavailable",
    lx.LDAPUnwillingToPerformResult: "the server is unwilling to do it",
    lx.LDAPAdminLimitExceededResult: "it hit the server's administrative limit",
}

_SOCKET_PROBLEMS = (
    (r"Connection refused", "the connection was refused (is the server running, and is the "
                            "port in source.url right?)"),
    (r"Name or service not known|nodename nor servname|getaddrinfo failed|"
     r"Temporary failure in name resolution|No address associated",
     "its host name does not resolve"),
    (r"No route to host|Network is unreachable", "there is no network route to it"),
    (r"timed out", "it did not answer in time"),
)


@contextmanager
def ldap_errors(host: str, what: str, *, bind_dn: str | None = None,
                ca_file: Path | None = None) -> Iterator[None]:
    """ldap3 exceptions -> one-sentence SourceErrors naming the server."""
    try:
        yield
    except (SourceError, SettingError):
        raise
    except lx.LDAPInvalidCredentialsResult as exc:
        raise SourceAuthError(_bind_rejected(host, bind_dn, exc.message or "")) from exc
    except (lx.LDAPStrongerAuthRequiredResult, lx.LDAPConfidentialityRequiredResult) as exc:
        raise SourceAuthError(f"{host} refuses a password sent without encryption (use an "
                              f"ldaps:// URL or start_tls = true)") from exc
    except lx.LDAPNoSuchObjectResult as exc:
        raise SourceError(f"{host} has no entry {exc.dn or ''!r} (check source.user_base and "
                          f"source.group_base)") from exc
    except lx.LDAPSizeLimitExceededResult as exc:
        raise SourceError(f"{host} stopped the {what} at its size limit; the read is "
                          f"incomplete and was abandoned") from exc
    except lx.LDAPTimeLimitExceededResult as exc:
        raise SourceError(f"{host} stopped the {what} at its time limit; the read is "
                          f"incomplete and was abandoned") from exc
    except lx.LDAPReferralResult as exc:
        raise SourceError(f"{host} answered with a referral; point the base at the server "
                          f"that holds the entries") from exc
    except lx.LDAPUnavailableCriticalExtensionResult as exc:
        raise SourceError(f"{host} does not support paged searches (control "
                          f"{PAGED_RESULTS_OID}); a read could be truncated, so none was "
                          f"made") from exc
    except lx.LDAPOperationResult as exc:
        problem = next((text for cls, text in _RESULT_PROBLEMS.items() if isinstance(exc, cls)),
                       "it failed")
        raise SourceError(f"the {what} on {host} was refused: {problem} "
                          f"({exc.description}{': ' + exc.message if exc.message else ''})"
                          ) from exc
    except (lx.LDAPException, OSError) as exc:
        raise SourceError(_connection_problem(host, what, exc, ca_file)) from exc


def _bind_rejected(host: str, bind_dn: str | None, message: str) -> str:
    found = re.search(r"\bdata ([0-9a-fA-F]{3,4})\b", message)
    reason = _AD_BIND_PROBLEMS.get(found.group(1).lower()) if found else None
    who = f" as {bind_dn}" if bind_dn else ""
    return (f"{host} rejected the bind{who}: "
            f"{reason or 'the bind DN or the password is wrong'} (check source.bind_dn and "
            f"source.password)")


def _connection_problem(host: str, what: str, exc: BaseException,
                        ca_file: Path | None = None) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        found = re.search(r"certificate verify failed:\s*([^(]+)", text)
        detail = found.group(1).strip() if found else "certificate verify failed"
        if "mismatch" in detail or "not valid for" in detail:
            return (f"the TLS certificate of {host} is not valid for that host name; use the "
                    f"name the certificate was issued to in source.url")
        fix = (f"{ca_file} (source.ca_file) is not the CA that signed it" if ca_file
               else "set source.ca_file to the CA that signed it")
        return f"the TLS certificate of {host} could not be verified ({detail}); {fix}"
    if "IP address mismatch" in text or "Hostname mismatch" in text:
        return (f"the TLS certificate of {host} is not valid for that host name; use the name "
                f"the certificate was issued to in source.url")
    if isinstance(exc, lx.LDAPStartTLSError):
        return f"{host} refused StartTLS ({text}); is TLS configured on the server?"
    if isinstance(exc, (lx.LDAPSessionTerminatedByServerError, lx.LDAPSocketReceiveError,
                        lx.LDAPSocketSendError)) or "closed" in text.lower():
        return f"the connection to {host} was lost during the {what}; nothing was used from it"
    if isinstance(exc, lx.LDAPResponseTimeoutError) or "timed out" in text:
        return f"{host} did not answer within the timeout during the {what}"
    for pattern, problem in _SOCKET_PROBLEMS:
        if re.search(pattern, text):
            return f"cannot reach {host}: {problem}"
    return f"cannot reach {host} ({type(exc).__name__}: {text})"

"""ldap3's exceptions mapped onto the error tree (``connectors/base.py``), one sentence each.

A rejected bind is :class:`SourceAuthError` (trying the next server with the same password
would only lock the account sooner); everything else that stops a read is
:class:`SourceError` naming the server, and says what to check where that is knowable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from ldap3.core import exceptions as lx

from ..base import SettingError, SourceAuthError, SourceError
from .session import PAGED_RESULTS_OID


@contextmanager
def ldap_errors(host: str, what: str) -> Iterator[None]:
    """ldap3 exceptions -> one-sentence SourceErrors naming the server."""
    try:
        yield
    except (SourceError, SettingError):
        raise
    except lx.LDAPInvalidCredentialsResult as exc:
        raise SourceAuthError(f"{host} rejected the bind DN or password "
                              f"(invalidCredentials)") from exc
    except (lx.LDAPStrongerAuthRequiredResult, lx.LDAPConfidentialityRequiredResult) as exc:
        raise SourceAuthError(f"{host} requires TLS or signing before it accepts this bind "
                              f"(use ldaps:// or start_tls = true)") from exc
    except lx.LDAPNoSuchObjectResult as exc:
        raise SourceError(f"{host}: the search base {exc.dn or ''!r} does not exist "
                          f"(check source.user_base/group_base)") from exc
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
        raise SourceError(f"LDAP {what} on {host} failed: {exc.description}"
                          f"{': ' + exc.message if exc.message else ''}") from exc
    except (lx.LDAPException, OSError) as exc:
        raise SourceError(_connection_problem(host, what, exc)) from exc


def _connection_problem(host: str, what: str, exc: BaseException) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        found = re.search(r"certificate verify failed:\s*([^(]+)", text)
        detail = found.group(1).strip() if found else "certificate verify failed"
        return (f"the TLS certificate of {host} could not be verified ({detail}); set "
                f"source.ca_file to the CA that signed it")
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
    return f"cannot reach {host} ({type(exc).__name__}: {text})"

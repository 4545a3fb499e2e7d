"""scim2-server (python-scim, pinned in pyproject) embedded on a loopback port.

A real, independent SCIM 2.0 implementation: strict about unknown attributes, PATCH paths and
filters, so anything the agent sends that is not RFC 7644 shows up here.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from scim2_models import ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import (load_default_resource_types, load_default_schemas,
                                load_default_service_provider_config)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):   # keep test output clean
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Scim2Server:
    def __init__(self, token: str = "scim2-token"):
        config = load_default_service_provider_config()
        config.authentication_schemes = [BEARER_TOKEN_SCHEME]
        provider = ScimProvider.from_discovery(load_default_schemas().values(),
                                               load_default_resource_types().values(),
                                               config=config)
        self.storage = InMemoryStorage()
        app = BearerTokenApplication(self.storage, provider,
                                     service=ScimService(provider, secret="x"),
                                     bearer_tokens=[token])
        self.token = token
        self.server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                                  handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v2"

    def __enter__(self) -> "Scim2Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def dump(self, resource: str) -> list[dict]:
        """Every resource of a type, read back over HTTP as a client would."""
        import httpx
        out, start = [], 1
        with httpx.Client(base_url=self.base_url + "/", trust_env=False,
                          headers={"Authorization": f"Bearer {self.token}"}) as client:
            while True:
                page = client.get(resource, params={"startIndex": start, "count": 100}).json()
                got = page.get("Resources") or []
                out += got
                if not got or len(out) >= page["totalResults"]:
                    return out
                start += len(got)

"""Signs a request in when it carries the test bearer token (django-scim2 leaves
authentication to the project; its SCIMAuthCheckMiddleware then answers 401 otherwise)."""

import hmac
import os

from django.contrib.auth.models import AnonymousUser


class _Client:
    is_authenticated = True
    is_anonymous = False


class BearerTokenMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.token = os.environ["SCIM_TEST_TOKEN"].encode()

    def __call__(self, request):
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(),
                                                                self.token)
        request.user = _Client() if ok else AnonymousUser()
        return self.get_response(request)

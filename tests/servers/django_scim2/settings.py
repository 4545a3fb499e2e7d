"""Django settings for the stock django-scim2 test server (loopback only, SQLite)."""

import os

SECRET_KEY = "test-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_scim",
    "tests.servers.django_scim2.scimapp",
]
MIDDLEWARE = [
    "tests.servers.django_scim2.scimapp.auth.BearerTokenMiddleware",
    "django_scim.middleware.SCIMAuthCheckMiddleware",
]
ROOT_URLCONF = "tests.servers.django_scim2.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("SCIM_TEST_DB", ":memory:")}}
AUTH_USER_MODEL = "scimapp.User"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
SCIM_SERVICE_PROVIDER = {
    "NETLOC": "127.0.0.1",
    "SCHEME": "http",
    "GROUP_MODEL": "tests.servers.django_scim2.scimapp.models.Group",
    "AUTHENTICATION_SCHEMES": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                                "description": "a fixed test token", "primary": True}],
    "WWW_AUTHENTICATE_HEADER": 'Bearer realm="django-scim2"',
}
LOGGING = {"version": 1, "disable_existing_loggers": True, "root": {"level": "CRITICAL"}}

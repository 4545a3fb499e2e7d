"""The child process: django-scim2's WSGI app on 127.0.0.1, port chosen by the OS.

Prints ``listening <port>`` once ready; ends when its stdin closes or on SIGTERM. One request at
a time (SQLite, and wsgiref speaks HTTP/1.0: a connection per request).
"""

import os
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.django_scim2.settings")

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main() -> None:
    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_Quiet)

    def watch_stdin():
        sys.stdin.read()           # the parent went away: stop
        threading.Thread(target=server.shutdown, daemon=True).start()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()

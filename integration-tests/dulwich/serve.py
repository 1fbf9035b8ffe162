"""A second smart HTTP git server, sharing no code with git: dulwich's WSGI app serving
every repository under a directory (upload-pack and receive-pack, no authentication).
Binds 127.0.0.1 on a port the system picks and prints it, so the caller never races for
a port. Usage: serve.py ROOT"""

import sys

from dulwich.server import FileSystemBackend
from dulwich.web import (
    WSGIRequestHandlerLogger,
    WSGIServerLogger,
    make_server,
    make_wsgi_chain,
)


class UnderRoot(FileSystemBackend):
    """Request paths (`/app.git`) are relative to the root."""

    def open_repository(self, path):
        if isinstance(path, bytes):
            path = path.decode()
        return super().open_repository(path.lstrip("/"))


def main() -> None:
    root = sys.argv[1]
    app = make_wsgi_chain(UnderRoot(root))
    server = make_server(
        "127.0.0.1",
        0,
        app,
        handler_class=WSGIRequestHandlerLogger,
        server_class=WSGIServerLogger,
    )
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

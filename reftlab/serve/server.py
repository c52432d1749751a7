"""Running the app: in the foreground (``reftlab serve``) or on a background thread.

    with background(create_app(engine)) as url:      # e.g. "http://127.0.0.1:52731"
        OpenAI(base_url=url + "/v1", api_key="-").models.list()

The web stack (starlette, uvicorn) is the optional extra ``reftlab[serve]``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXTRA = "pip install 'reftlab[serve]'"


def require_web_stack() -> None:
    """Raise an ImportError naming the extra when starlette or uvicorn is missing."""
    missing = []
    for name in ("starlette", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"serving needs {' and '.join(missing)}: {EXTRA}")


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl-C stops it cleanly)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@contextmanager
def background(app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a thread for the duration of the block; yields its base URL.

    ``port=0`` picks a free port. The server (and the app's engine) stop when the block ends.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="reftlab-serve-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start; see the log above")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()

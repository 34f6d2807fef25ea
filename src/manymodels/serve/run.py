"""Start a server: load the version, then answer on uvicorn, in this process or in several workers.

With `workers > 1` uvicorn starts each worker afresh; each rebuilds its `Server` from the same
settings (passed in the environment as JSON) and follows the alias on its own. This process
loads the version first, so a bad bundle, an unreachable tracking server or a corrupted pack is
one error line here, before any worker starts, and the workers find the pack downloaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from manymodels.errors import ManymodelsError

SETTINGS_ENV = "MANYMODELS_SERVE_SETTINGS"
# MLflow's HTTP client retries for minutes by default; a server asks the registry every few seconds
# and must notice an outage (and start) quickly. A user's own settings win.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


@dataclass
class Settings:
    """Everything a worker needs to build the same server: where the bundle is, what to serve, the limits."""

    bundle: str | None
    target: str | None
    variables: dict[str, str]
    model: str
    run_id: str | None = None
    version: int | None = None
    alias: str | None = "champion"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    access_log: bool = False
    auth_token_env: str | None = None  # the environment variable holding the bearer token every request needs
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    header_timeout: float = 10.0  # seconds a request's headers may take (serve.connections)
    drain: float = 3.0  # at shutdown, seconds a connection idle between requests is still answered
    limits: dict[str, Any] = field(default_factory=dict)

    def token(self) -> str | None:
        """The bearer token requests must carry (read from the environment: never written in the settings)."""
        return os.environ[self.auth_token_env] if self.auth_token_env else None

    def tls(self) -> dict[str, Any]:
        """uvicorn's TLS options: a certificate and its key, or none."""
        return {"ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile} if self.ssl_certfile else {}


def prepare_environment() -> None:
    """Bounded MLflow HTTP timeouts (unless set), before MLflow is imported."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def build(settings: Settings) -> Any:
    """The `Server` for these settings, started (version loaded, alias followed)."""
    from manymodels.bundle import check_bundle, load_config
    from manymodels.errors import BundleError
    from manymodels.jobs.context import Target
    from manymodels.serve.server import Choice, Limits, Server

    config = load_config(Path(settings.bundle) if settings.bundle else None, settings.target, settings.variables)
    problems = check_bundle(config, data=False, params=False)
    if problems:
        raise BundleError(problems)
    target = Target(config)
    target.model(settings.model)
    target.tracker  # noqa: B018 - built here, it checks the server answers: one clear line now, not minutes of retries
    choice = Choice(settings.model, settings.run_id, settings.version, settings.alias)
    server = Server(target, choice, Limits(**settings.limits))
    server.start()
    return server


def worker_app() -> Any:
    """uvicorn's app factory in each worker process."""
    from manymodels.serve.app import create_app

    prepare_environment()
    _log_setup()
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    return create_app(build(settings), token=settings.token())


def serve(settings: Settings, server: Any = None, announce: Any = None) -> None:
    """Answer requests until interrupted (Ctrl-C or SIGTERM): in this process, or in `settings.workers` workers.

    Args:
        settings: what to serve and how.
        server: a `Server` already started from these settings (it serves this process's requests;
            with several workers it has only checked the version loads, and stops before they start).
        announce: called with the URL once the server is about to listen.
    """
    import uvicorn

    from manymodels.serve.app import create_app
    from manymodels.serve.connections import DRAIN_ENV, HeaderDeadline, wait_accepted
    from manymodels.serve.connections import ENV as HEADER_ENV
    from manymodels.serve.server import close_quietly

    os.environ[HEADER_ENV] = str(settings.header_timeout)  # read by each connection, in every worker
    os.environ[DRAIN_ENV] = str(settings.drain)
    graceful = int(settings.drain) + 10  # then uvicorn cancels what is left: never before the drain is over

    _log_setup()
    url = f"{'https' if settings.ssl_certfile else 'http'}://{settings.host}:{settings.port}"
    if settings.workers <= 1:
        server = server or build(settings)
        try:
            sock = _listening_socket(settings.host, settings.port)  # a port in use: one line, before announcing
            if announce is not None:
                announce(url)
            config = uvicorn.Config(create_app(server, token=settings.token()), log_level="warning",
                                    access_log=settings.access_log, timeout_graceful_shutdown=graceful,
                                    http=HeaderDeadline, **settings.tls())
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            close_quietly(server)
        return
    if server is not None:
        close_quietly(server)
    sock = _listening_socket(settings.host, settings.port)
    folder = tempfile.mkdtemp(prefix="manymodels-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    try:
        if announce is not None:
            announce(url)
        config = uvicorn.Config("manymodels.serve.run:worker_app", factory=True, host=settings.host,
                                port=settings.port, workers=settings.workers, log_level="warning",
                                access_log=settings.access_log, timeout_graceful_shutdown=graceful,
                                http=HeaderDeadline, **settings.tls())
        from uvicorn.supervisors import Multiprocess

        class Supervisor(Multiprocess):
            """uvicorn's supervisor, which stops the shared listening socket before it stops the workers: else the
            kernel kept accepting connections on it after the first worker stopped accepting, and reset them when the
            last one exited. A connection refused is retried elsewhere by a load balancer; a reset one is lost. The
            socket is stopped once the workers have accepted what the kernel had queued on it (those would be reset
            too: seen when one worker was still starting and the other busy)."""

            terminated = False

            def handle_term(self) -> None:
                self.terminated = True
                super().handle_term()

            def terminate_all(self) -> None:
                wait_accepted(self.sockets, settings.drain)  # the workers accept what the kernel has queued
                for listening in self.sockets:
                    with contextlib.suppress(OSError):
                        listening.shutdown(socket.SHUT_RDWR)  # every worker's copy stops listening at once
                    listening.close()
                super().terminate_all()

        # uvicorn.run's own socket for its workers has no protocol number, so asyncio leaves Nagle's algorithm
        # on for each connection and an answer (headers, then body) waits ~40 ms for the client's delayed ACK
        # (measured: 50 ms a single-row request). A TCP socket bound here gets TCP_NODELAY like one process.
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        supervisor = Supervisor(config, sockets=[sock])  # it takes SIGTERM and SIGINT for itself
        supervisor.run()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if supervisor.terminated:  # the caller's handler says how a SIGTERM ends this process (exit 143)
            signal.raise_signal(signal.SIGTERM)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ManymodelsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _log_setup() -> None:
    logger = logging.getLogger("manymodels.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s manymodels.serve: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

"""`manymodels serve`: answer predictions over HTTP for every segment of a model family."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from manymodels.cli import render
from manymodels.cli.app import BundleOpt, TargetOpt, VarOpt, app, guarded, state, variables

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Serve and follow this alias (default: champion).")
    ] = None,
    version: Annotated[int | None, typer.Option("--version", min=1, help="Serve this version, never another.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Serve this training run's models, never another.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless you open it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Processes answering requests (each holds its models).")] = 1,
    max_models: Annotated[
        int, typer.Option("--max-models", min=1, help="Segment models kept loaded per process (least recent dropped).")
    ] = 2_000,
    prewarm: Annotated[
        int, typer.Option(min=0, help="Models loaded ahead of requests: the largest segments at start, the most "
                                      "recently asked at a swap.")
    ] = 100,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows one request may carry.")] = 10_000,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MB.")] = 32.0,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at the alias.")] = 10.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    auth_token_env: Annotated[
        str | None, typer.Option("--auth-token-env", metavar="VAR", help="Require 'Authorization: Bearer <token>' on "
                                 "every request but /ping; the token is read from this environment variable.")
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="Serve HTTPS with this certificate (PEM; with --ssl-keyfile).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option("--ssl-keyfile", help="The certificate's private key (PEM).")
    ] = None,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", min=0.1, help="Seconds a request's headers may take to arrive (from "
                            "its first byte, or the connection's start): a slower connection is closed.")
    ] = 10.0,
    drain: Annotated[
        float, typer.Option(min=0.0, help="At SIGTERM or Ctrl-C, seconds a connection idle between requests is still "
                            "answered (with 'Connection: close') before it is closed.")
    ] = 3.0,
) -> None:
    """Serve predictions over HTTP (MLflow's scoring protocol), switching when the champion moves."""
    from manymodels.serve.run import Settings, build, prepare_environment, serve

    def body() -> int:
        pinned = [flag for flag, value in (("--version", version), ("--run", run), ("--alias", alias)) if value]
        if len(pinned) > 1:
            render.err.print(f"{' and '.join(pinned)}: give one of them", markup=False)
            return 2
        wrong = _access_problem(auth_token_env, ssl_certfile, ssl_keyfile)
        if wrong:  # before anything is loaded: the server would answer the wrong people, or no one
            render.err.print(wrong, markup=False)
            return 2
        prepare_environment()  # bounded MLflow timeouts, before MLflow is imported
        settings = Settings(
            bundle=str(state.bundle) if state.bundle else None,
            target=target,
            variables=variables(var),
            model=model,
            run_id=run,
            version=version,
            alias=None if (run or version) else (alias or "champion"),
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            auth_token_env=auth_token_env,
            ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
            header_timeout=header_timeout,
            drain=drain,
            limits={
                "max_models": max_models,
                "prewarm": prewarm,
                "max_rows": max_rows,
                "max_body_bytes": int(max_body_mb * 1024 * 1024),
                "poll_seconds": poll,
            },
        )
        started = time.perf_counter()
        server = build(settings)
        live = server.live
        what = f"version {live.serving.version}" if live.serving.version else f"run {live.serving.run_id}"
        fallback = ", with a fallback" if live.pack.fallback is not None else ""
        render.out.print(
            f"loaded {model} {what} ({live.pack.served_count():,} segments{fallback}) "
            f"in {time.perf_counter() - started:.1f} s",
            markup=False,
        )
        if host not in LOOPBACK and not (auth_token_env or ssl_certfile):
            render.err.print(
                f"warning: listening on {host}: anyone who can reach this machine can ask it for predictions "
                "(no authentication: give --auth-token-env VAR and --ssl-certfile/--ssl-keyfile, or put it behind "
                "your gateway)",
                markup=False,
            )
        following = f"; following alias {settings.alias}" if settings.alias else ""

        def announce(url: str) -> None:
            render.out.print(f"serving on {url} (POST /invocations; /health /version /segments/KEY /metrics)"
                             f"{following}; Ctrl-C stops", markup=False)

        serve(settings, server, announce)
        return 0

    guarded(body)  # uvicorn stops gracefully on SIGTERM, then gives it back to our handler: exit 143


def _access_problem(token_env: str | None, certfile: Path | None, keyfile: Path | None) -> str | None:
    """What is wrong with the access options (one line), or None."""
    if token_env is not None and not os.environ.get(token_env):
        return f"--auth-token-env {token_env}: the environment variable {token_env} is not set or empty"
    if (certfile is None) != (keyfile is None):
        return "--ssl-certfile and --ssl-keyfile go together: give both"
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not path.is_file():
            return f"{flag} {path}: no such file"
    return None

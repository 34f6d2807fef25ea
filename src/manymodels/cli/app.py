"""The `manymodels` command's app: shared options, the one-line error handling, loading the bundle for a target."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from manymodels.bundle import BundleConfig, check_bundle, load_config
from manymodels.cli import render
from manymodels.errors import BundleError, ManymodelsError

if TYPE_CHECKING:
    from manymodels.jobs.context import Target

app = typer.Typer(
    name="manymodels",
    help="Train, track and score one model per segment, from a manymodels.yml bundle.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class _State:
    bundle: Path | None = None
    debug: bool = False


state = _State()

TargetOpt = Annotated[str | None, typer.Option("--target", "-t", help="Target to use (default: the default target).")]


def _bundle_here(value: Path | None) -> Path | None:
    if value is not None:  # given after the command: the same as before it
        state.bundle = value
    return value


BundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle", "-b", help="manymodels.yml or its folder (default: found from the current folder up).",
        callback=_bundle_here,
    ),
]
VarOpt = Annotated[list[str] | None, typer.Option("--var", help="Set a variable: --var key=value (repeatable).")]
VersionOpt = Annotated[int | None, typer.Option("--version", min=1, help="The version (default: the champion).")]


def _version(value: bool) -> None:
    if value:
        from manymodels.distribution import version

        render.out.print(f"manymodels {version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", "-b", help="manymodels.yml or its folder (default: found from the current folder up)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Show manymodels' version and exit.", is_eager=True, callback=_version)
    ] = False,
) -> None:
    state.bundle = bundle
    state.debug = debug
    # MLflow's INFO lines (database migrations and the like) and its "View run" links drown our output;
    # MLflow reads these when it is imported (later, by the command), so they are set before. --debug keeps them.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not debug:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.DEBUG if debug else logging.WARNING)
    # MLflow's SQL store logs a database error with its traceback and SQL before raising it; the error is one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def fail(exc: BaseException) -> NoReturn:
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, BundleError):
        for line in exc.problems:
            render.err.print(line, markup=False)
    elif isinstance(exc, ManymodelsError):
        render.err.print(f"error: {exc}", markup=False)
    else:  # one line, without the SQL and parameters a database error carries
        from manymodels.registry.mlflow_env import mlflow_message

        render.err.print(f"error: {type(exc).__name__}: {mlflow_message(exc)} (--debug shows the traceback)",
                         markup=False)
    code = exc.exit_code if isinstance(exc, ManymodelsError) else 1
    raise typer.Exit(code)


class Terminated(BaseException):
    """SIGTERM (`kill PID`, a CI runner cancelling a job) raised in the main thread, so a command stops as on
    Ctrl-C: the run it started is marked FAILED, its workers stopped, its locks released."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def guarded(body: Callable[[], int], stop_on_sigterm: bool = True) -> None:
    """Run a command's body: its errors one line and an exit code; Ctrl-C exit 130, SIGTERM exit 143 (unless
    `stop_on_sigterm` is False: a server, for which SIGTERM is the ordinary way to stop)."""
    previous = None
    if stop_on_sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = body()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        render.err.print("interrupted")
        raise typer.Exit(130) from None
    except Terminated:
        render.err.print("terminated (SIGTERM)")
        raise typer.Exit(143) from None
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        fail(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        raise typer.Exit(code)


def variables(var: list[str] | None) -> dict[str, str]:
    """`--var key=value` options as a mapping (a malformed one: a BundleError naming it)."""
    values: dict[str, str] = {}
    for item in var or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BundleError(f"--var {item!r}: expected key=value")
        values[key.strip()] = value
    return values


def load(target: str | None, var: list[str] | None) -> BundleConfig:
    return load_config(state.bundle, target, variables(var))


def checked(target: str | None, var: list[str] | None, fits: bool = True) -> Target:
    """The bundle loaded for a target and checked (references, import paths), as the context every task takes.

    `fits=False`, for a command that fits no model: estimator parameters are not checked (that check
    imports LightGBM, which such a command may never need in this process).
    """
    from manymodels.jobs import context  # imported here: it brings MLflow, which `--help` does not need

    config = load(target, var)
    problems = check_bundle(config, data=False, params=fits)
    if problems:
        raise BundleError(problems)
    return context.Target(config)



ForceLockOpt = Annotated[
    int,
    typer.Option(
        "--force-lock",
        count=True,
        help="Break a lock left by a process that died; a holder still running on this host only when given twice.",
    ),
]


def write_table(table: Any, path: Path) -> None:
    """Write a table a command made (Parquet, or CSV by suffix) and say where."""
    from manymodels.data import write_table as write

    write(table, path)
    render.out.print(f"table: {path}")


def files_note(purged: bool, tracking_uri: str) -> str:
    if purged:
        return "their runs and files were removed from this machine's store"
    return (
        f"the server at {tracking_uri} keeps the deleted runs' files until its operator runs "
        f"`mlflow gc --backend-store-uri <its store>` (with MLFLOW_TRACKING_URI={tracking_uri})"
    )

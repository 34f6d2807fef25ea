"""MLflow's errors in one line: no SQL, parameters or hints, a full disk said as one."""

from __future__ import annotations

from manymodels.registry.mlflow_env import DISK_FULL, mlflow_message


class StoreError(Exception):
    """What MLflow's SQL store raises: its message holds SQLAlchemy's whole text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


SQL_TEXT = """(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)
(sqlite3.IntegrityError) UNIQUE constraint failed: metrics.key
[SQL: INSERT INTO metrics ("key", value) VALUES (?, ?)]
[parameters: [('segments_total', 6.0), ('store_secret_name', 1.0)]]
(Background on this error at: https://sqlalche.me/e/21/e3q8)"""


def test_sql_and_parameters_never_reach_the_message() -> None:
    said = mlflow_message(StoreError(SQL_TEXT))
    assert said == "(sqlite3.IntegrityError) UNIQUE constraint failed: metrics.key"


def test_a_full_disk_anywhere_in_the_chain_says_so() -> None:
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise StoreError("cannot log metrics") from exc
    except StoreError as outer:
        said = mlflow_message(outer)
    assert said.startswith(DISK_FULL) and "No space left on device" in said
    assert mlflow_message(StoreError(SQL_TEXT.replace("UNIQUE constraint failed: metrics.key",
                                                      "database or disk is full"))).startswith(DISK_FULL)

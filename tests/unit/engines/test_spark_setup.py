"""What the Spark engine checks before it starts a JVM: no session needed for these."""

from __future__ import annotations

import socket

import pytest

from manymodels.engines.spark import SparkEngine
from manymodels.engines.spark_session import check_reachable
from manymodels.errors import EngineSetupError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_standalone_master_names_every_address() -> None:
    a, b = closed_port(), closed_port()
    with pytest.raises(EngineSetupError) as err:
        check_reachable(f"spark://127.0.0.1:{a},127.0.0.1:{b}", None)
    text = str(err.value)
    assert text.startswith(f"cannot reach Spark master spark://127.0.0.1:{a},127.0.0.1:{b} (")
    assert f"127.0.0.1:{a}: " in text and f"127.0.0.1:{b}: " in text


def test_one_live_master_of_several_is_enough() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = server.getsockname()[1]
        check_reachable(f"spark://127.0.0.1:{closed_port()},127.0.0.1:{live}", None)


def test_a_connect_url_with_parameters_is_checked_at_its_host_and_port() -> None:
    port = closed_port()
    with pytest.raises(EngineSetupError, match=rf"cannot reach Spark Connect server sc://127.0.0.1:{port}/;token=x"):
        check_reachable(None, f"sc://127.0.0.1:{port}/;token=x")


@pytest.mark.parametrize("master", [None, "local[2]", "local[*]", "yarn", "k8s://https://host:443"])
def test_local_and_resource_manager_masters_are_left_to_spark(master: str | None) -> None:
    check_reachable(master, None)


@pytest.mark.parametrize(
    ("options", "local"),
    [({}, True), ({"master": "local[2]"}, True), ({"master": "spark://h:7077"}, False),
     ({"remote": "local[2]"}, True), ({"remote": "sc://h:15002"}, False)],
)
def test_whether_executors_share_this_machine(options: dict[str, str], local: bool) -> None:
    assert SparkEngine(**options).is_local is local

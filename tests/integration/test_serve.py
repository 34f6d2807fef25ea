"""`manymodels serve` as an operator runs it: a real process on a free port of 127.0.0.1, a real MLflow server
behind a TCP relay the tests can cut, real HTTP. The tests run in order on one served model: answers and errors
on version 1, then a promotion under load, a corrupted new version, the tracking server going away."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

import manymodels as mm
from helpers import TcpRelay, free_port, model_block, segment_frame, stop_process, wait_until_up, write_bundle

pytestmark = pytest.mark.slow
MANYMODELS = str(Path(sys.executable).with_name("manymodels"))
SEGMENTS = [f"seg_{i:03d}" for i in range(8)]


class Fleet:
    """A trained and promoted model, a relay to its tracking server, and its server's process."""

    def __init__(self, root: Path, relay: TcpRelay, project: Any) -> None:
        self.root, self.relay, self.project = root, relay, project
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"

    def post(self, payload: Any, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json=payload, timeout=30, **kwargs)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=30)


def score_rows(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.drop(columns=["label", "record_id"]).groupby("segment").head(3)
    unseen = rows.head(2).assign(segment="seg_unseen")
    return pd.concat([rows, unseen], ignore_index=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("serve")
    relay = TcpRelay(mlflow_server)
    frame = segment_frame(segments=8, rows=60)
    models = {"demand": model_block(fallback="global")}
    variables = {"data_root": {"default": "data"}, "tracking_uri": {"default": relay.url}}
    # A bundle name of its own: the session's MLflow server is shared, and other modules count their runs.
    write_bundle(root, frame=frame, models=models, tracking_uri="${var.tracking_uri}", score_frame=score_rows(frame),
                 extra={"variables": variables, "bundle": {"name": "serve-tests"}})
    project = mm.load_bundle(root)
    project.train("demand", workers=1)
    project.promote("demand", take_all=True)
    fleet = Fleet(root, relay, project)
    port = free_port()
    fleet.url = f"http://127.0.0.1:{port}"
    with open(fleet.log, "wb") as log:
        fleet.proc = subprocess.Popen(
            [MANYMODELS, "--bundle", str(root), "serve", "demand", "--port", str(port), "--poll", "0.3",
             "--max-models", "4", "--prewarm", "2", "--header-timeout", "2"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, "NO_COLOR": "1"},
        )
    try:
        wait_until_up(f"{fleet.url}/ping", fleet.proc, fleet.log, seconds=60)
        yield fleet
    finally:
        stop_process(fleet.proc)
        relay.cut()


def test_answers_equal_score_in_every_format_and_unknown_segments_get_the_fallback(fleet: Fleet) -> None:
    rows = pd.read_parquet(fleet.root / "data" / "score.parquet")
    expected = fleet.project.score("demand", rows)
    split = json.loads(rows.to_json(orient="split", index=False))
    records = json.loads(rows.to_json(orient="records"))
    answers = [
        fleet.post({"dataframe_split": split}),
        fleet.post({"dataframe_records": records}),
        fleet.post({"instances": records}),
        fleet.post({"inputs": {c: rows[c].tolist() for c in rows.columns}}),
        requests.post(f"{fleet.url}/invocations", data=rows.to_csv(index=False), timeout=30,
                      headers={"Content-Type": "text/csv"}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Version"] == "1"
        got = pd.DataFrame(answer.json()["predictions"])
        np.testing.assert_allclose(got["prediction"].to_numpy(float), expected["prediction"].to_numpy(float),
                                   rtol=0, atol=1e-9)
        assert got["model_source"].tolist() == expected["model_source"].tolist()
    assert set(pd.DataFrame(answers[0].json()["predictions"])["model_source"]) == {"segment", "fallback"}
    # Rows whose segments all have a model of their own: the plain path (serve/plain.py, no frame built), the same
    # answers.
    own = expected["model_source"].eq("segment").to_numpy()
    plain = fleet.post({"dataframe_split": json.loads(rows[own].to_json(orient="split", index=False))})
    assert plain.status_code == 200, plain.text
    got = pd.DataFrame(plain.json()["predictions"])
    np.testing.assert_allclose(got["prediction"].to_numpy(float), expected["prediction"].to_numpy(float)[own],
                               rtol=0, atol=1e-9)
    assert set(got["model_source"]) == {"segment"} and len(got) == own.sum() > 1

    # MLflow's own scoring client, unchanged, talks to it.
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]))
    client.wait_server_ready(timeout=10)
    predictions = client.invoke(rows).get_predictions()
    np.testing.assert_allclose(predictions["prediction"].to_numpy(float), expected["prediction"].to_numpy(float),
                               atol=1e-9)


def test_bad_requests_are_json_4xx_without_a_trace_and_the_server_carries_on(fleet: Fleet) -> None:
    good = {"dataframe_records": [{"segment": "seg_001", "f0": 0.1, "f1": 0.2, "f2": 0.3}]}
    cases = [
        (fleet.post({"dataframe_records": [{"segment": "seg_001", "f0": 0.1}]}), 400, "missing column"),
        (fleet.post({"dataframe_records": [{"segment": "seg_001", "f0": "a lot", "f1": 1, "f2": 1}]}), 400, "'f0'"),
        (requests.post(f"{fleet.url}/invocations", data=b"\x00\xff" * 50, timeout=30,
                       headers={"Content-Type": "application/json"}), 400, "UTF-8"),
        (requests.post(f"{fleet.url}/invocations", data=b"hello", timeout=30,
                       headers={"Content-Type": "application/x-yaml"}), 415, "not supported"),
        (requests.post(f"{fleet.url}/invocations", data=b"[" * 100_000, timeout=30,
                       headers={"Content-Type": "application/json"}), 400, "nested too deeply"),
        (fleet.post({"dataframe_records": good["dataframe_records"] * 10_001}), 413, "10001 rows"),
        (requests.post(f"{fleet.url}/invocations", data=b"x" * (33 * 1024 * 1024), timeout=60,
                       headers={"Content-Type": "application/json"}), 413, "limit"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert words in body["message"] and body["error_code"]
        assert "Traceback" not in answer.text and "File \"" not in answer.text
    assert fleet.get("/ping").status_code == 200
    assert fleet.post(good).status_code == 200


def test_health_version_segments_and_metrics_say_what_serves(fleet: Fleet) -> None:
    version = fleet.get("/version").json()
    assert version["model"] == "demand" and version["version"] == 1 and version["alias"] == "champion"
    health = fleet.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["segments"] == 8 and health.json()["fallback"] is True

    one = fleet.get("/segments/seg_003").json()
    assert one["model"] is True and one["served_by"] == "segment" and one["rows"] == 60
    assert one["metric"]["rmse"] > 0
    unseen = fleet.get("/segments/seg_unseen").json()
    assert unseen["model"] is False and unseen["served_by"] == "fallback"
    assert fleet.get("/segments/a/b").status_code == 400

    # Every segment asked for, one request each: the cache never holds more than --max-models 4 segment models.
    for name in SEGMENTS:
        assert fleet.post({"dataframe_records": [{"segment": name, "f0": 0.5, "f1": 0.5, "f2": 0.5}]}).ok
    text = fleet.get("/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["manymodels_serve_models_loaded"] == 5  # four segments' models and the fallback's
    assert values["manymodels_serve_model_cache_misses_total"] >= 4
    assert values["manymodels_serve_model_cache_hits_total"] >= 1
    assert values['manymodels_serve_requests_total{endpoint="invocations",status="200"}'] >= 8
    assert values['manymodels_serve_rows_total{source="fallback"}'] >= 2
    assert values["manymodels_serve_version"] == 1
    assert 'manymodels_serve_request_seconds_bucket{endpoint="invocations",le="0.02"}' in values


def _versions_seen_under_load(fleet: Fleet, expected: dict[str, np.ndarray], rows: pd.DataFrame,
                              stop: threading.Event, failures: list[str], seen: list[str]) -> None:
    payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    session = requests.Session()
    while not stop.is_set():
        try:
            answer = session.post(f"{fleet.url}/invocations", json=payload, timeout=30)
        except requests.RequestException as exc:
            failures.append(repr(exc))
            continue
        if answer.status_code != 200:
            failures.append(f"{answer.status_code} {answer.text[:200]}")
            continue
        version = answer.headers["X-Model-Version"]
        got = np.array([p["prediction"] for p in answer.json()["predictions"]], dtype=float)
        want = expected.get(version)
        if want is None or not np.allclose(got, want, atol=1e-9):
            failures.append(f"version {version}: predictions of another version")
        seen.append(version)


def test_a_promotion_under_load_switches_with_no_failed_or_mixed_answer(fleet: Fleet) -> None:
    rows = pd.read_parquet(fleet.root / "data" / "score.parquet")
    expected = {"1": fleet.project.score("demand", rows)["prediction"].to_numpy(float)}
    # Version 2 learns from other rows: its predictions differ from version 1's.
    frame = segment_frame(segments=8, rows=60, seed=5)
    frame.to_parquet(fleet.root / "data" / "train.parquet", index=False)
    project = mm.load_bundle(fleet.root)
    run = project.train("demand", workers=1)
    expected["2"] = project.score("demand", rows, run_id=run.run_id)["prediction"].to_numpy(float)
    assert not np.allclose(expected["1"], expected["2"])

    stop, failures, seen = threading.Event(), [], []
    clients = [threading.Thread(target=_versions_seen_under_load, args=(fleet, expected, rows, stop, failures, seen))
               for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)
        project.promote("demand", run_id=run.run_id, take_all=True)
        deadline = time.monotonic() + 60
        while fleet.get("/version").json()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert failures == []
    assert "1" in seen and "2" in seen and seen[-1] == "2"
    assert len(seen) > 20
    assert fleet.get("/health").json()["serving"]["version"] == 2


def _artifact_shards(tmp_path_factory: pytest.TempPathFactory, run_id: str) -> list[Path]:
    base = tmp_path_factory.getbasetemp()
    return sorted(base.glob(f"mlflow-server*/artifacts/*/{run_id}/artifacts/model/pack/shards/shard-*.parquet"))


def test_a_corrupted_shard_in_a_new_version_keeps_the_old_one_serving_and_says_why(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory, mlflow_server: str
) -> None:
    # The server cannot look while version 3 is promoted (through the relay's back door) and then damaged
    # in the artifact store: it finds a new version whose shard does not read.
    project = mm.load_bundle(fleet.root, variables={"tracking_uri": mlflow_server})
    run = project.train("demand", workers=1)
    fleet.relay.cut()
    try:
        promoted = project.promote("demand", run_id=run.run_id, take_all=True)
        assert promoted.version == 3 and promoted.run_id
        shards = _artifact_shards(tmp_path_factory, promoted.run_id)
        assert shards
        shards[0].write_bytes(b"PAR1" + os.urandom(2000))  # what a half-copied or bit-rotten file looks like
    finally:
        fleet.relay.mend()
    deadline = time.monotonic() + 60
    health = fleet.get("/health").json()
    while "update" not in health and time.monotonic() < deadline:
        time.sleep(0.2)
        health = fleet.get("/health").json()
    assert health["status"] == "degraded" and health["serving"]["version"] == 2
    assert health["update"]["version"] == 3 and shards[0].name in health["update"]["error"]
    answer = fleet.post({"dataframe_records": [{"segment": "seg_001", "f0": 0.1, "f1": 0.2, "f2": 0.3}]})
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
    assert "version 3" in fleet.log.read_text() and "still serving version 2" in fleet.log.read_text()

    # Rolled back to what it serves: nothing is wanted that it lacks, so it is healthy again.
    project.rollback("demand", to=2)
    deadline = time.monotonic() + 60
    while fleet.get("/health").json()["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    health = fleet.get("/health").json()
    assert health["status"] == "ok" and "update" not in health and health["serving"]["version"] == 2


def test_the_tracking_server_going_away_leaves_it_serving_and_reported(fleet: Fleet) -> None:
    fleet.relay.cut()
    try:
        deadline = time.monotonic() + 60
        health = fleet.get("/health").json()
        while "tracking" not in health and time.monotonic() < deadline:
            time.sleep(0.3)
            health = fleet.get("/health").json()
        assert health["status"] == "degraded" and health["tracking"]["error"]
        answer = fleet.post({"dataframe_records": [{"segment": "seg_002", "f0": 0.1, "f1": 0.2, "f2": 0.3}]})
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
    finally:
        fleet.relay.mend()
    deadline = time.monotonic() + 60
    while "tracking" in fleet.get("/health").json() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "tracking" not in fleet.get("/health").json()


def test_an_unreachable_tracking_server_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write_bundle(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = subprocess.run([MANYMODELS, "--bundle", str(tmp_path), "serve", "demand", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not reachable" in lines[0] and "Traceback" not in result.stderr


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl, as an operator makes one), valid a day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_connections_that_never_finish_their_headers_are_closed(fleet: Fleet) -> None:
    """Before: a connection that sent nothing, or its headers a byte at a time, stayed open for ever (a few hundred
    hold the server). Now its headers must be whole within --header-timeout (2 s here) of its start."""
    port = int(fleet.url.rsplit(":", 1)[1])

    def closed_after(trickle: bytes) -> float:
        """Seconds until the server closed a connection that sends `trickle` a byte every half second."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            try:
                conn.settimeout(0.5)
                for byte in trickle:
                    conn.sendall(bytes([byte]))
                    with contextlib.suppress(TimeoutError):
                        if conn.recv(1024) == b"":
                            return time.monotonic() - started
                conn.settimeout(30)
                assert conn.recv(1024) == b""  # closed by the server (else a timeout raises)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by the server while a byte was on its way
        return time.monotonic() - started

    assert closed_after(b"") < 30  # connected, said nothing
    assert closed_after(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40) < 30  # never ends its headers
    assert fleet.get("/ping").status_code == 200  # the others are answered as ever


def test_sigterm_answers_the_requests_in_flight_and_exits_143(fleet: Fleet) -> None:
    """20 clients posting on kept-alive connections while the server (two workers) gets SIGTERM: each request is
    answered or refused, none is reset (before: 19 of 20 clients saw a reset, and the exit was -15 or 0).

    The drain is long here: with the default (3 s), a client thread stalled that long on a loaded machine would send
    its next request as its idle connection closes, which HTTP allows and no server can answer. The server still
    exits as soon as every connection is closed, well before the drain is over."""
    port = free_port()
    log = fleet.root / "serve-term.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([MANYMODELS, "--bundle", str(fleet.root), "serve", "demand", "--port", str(port),
                                 "--workers", "2", "--drain", "30"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=fleet.root)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/ping", proc, log, seconds=90)
    body = {"dataframe_records": [{"segment": SEGMENTS[i % 8], "f0": 0.5, "f1": 0.5, "f2": 0.5} for i in range(500)]}
    stop, answered, lost = threading.Event(), [], []

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                answered.append(session.post(f"{url}/invocations", json=body, timeout=30).status_code)
            except requests.ConnectionError as exc:
                if "refused" not in str(exc):  # a connection refused is retried elsewhere; a reset one is lost
                    lost.append(repr(exc)[:200])
                time.sleep(0.05)

    clients = [threading.Thread(target=client) for _ in range(20)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.terminate()
        code = proc.wait(timeout=60)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        if proc.poll() is None:
            proc.kill()
    assert code == 143, log.read_text()[-2000:]
    assert "terminated (SIGTERM)" in log.read_text()
    assert len(answered) >= 40 and set(answered) == {200}, sorted(set(answered))
    assert lost == [], lost[:3]


def test_two_workers_answer_on_one_port_over_https_with_a_token_and_metrics_add_up(fleet: Fleet) -> None:
    """Two workers (each reads the token and serves TLS itself), a bearer token every request needs but /ping."""
    port = free_port()
    log = fleet.root / "serve-2.log"
    cert, key = self_signed(fleet.root)
    token = "t0ken-" + "x" * 30
    with open(log, "wb") as out:
        proc = subprocess.Popen([MANYMODELS, "--bundle", str(fleet.root), "serve", "demand", "--port", str(port),
                                 "--workers", "2", "--auth-token-env", "SERVE_TOKEN", "--ssl-certfile", str(cert),
                                 "--ssl-keyfile", str(key)], stdout=out, stderr=subprocess.STDOUT, cwd=fleet.root,
                                env={**os.environ, "SERVE_TOKEN": token})
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # /ping needs no token (load balancers)
            try:
                if requests.get(f"{url}/ping", timeout=2, verify=str(cert)).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        session = requests.Session()
        tls = {"verify": str(cert), "timeout": 30}  # per request: a CA bundle in the environment outranks a session's
        row = {"dataframe_records": [{"segment": "seg_004", "f0": 0.1, "f1": 0.2, "f2": 0.3}]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            refused = session.post(f"{url}/invocations", json=row, headers=headers, **tls)
            assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED", refused.text
            assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert session.get(f"{url}/health", **tls).status_code == 401
        session.headers["Authorization"] = f"Bearer {token}"
        answers = [session.post(f"{url}/invocations", json=row, **tls) for _ in range(30)]
        assert {a.status_code for a in answers} == {200} and {a.headers["X-Model-Version"] for a in answers} == {"2"}
        text = session.get(f"{url}/metrics", **tls).text
        served = [float(line.split(" ")[1]) for line in text.splitlines()
                  if line.startswith('manymodels_serve_requests_total{endpoint="invocations",status="200"}')]
        assert served == [30.0]  # both workers' counts, whichever answers the scrape
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP to a TLS port
            requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
    finally:
        stop_process(proc)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in log.read_text(), log.read_text()[-2000:]
    assert token not in log.read_text()


def test_access_options_that_cannot_work_are_one_line_and_exit_2(fleet: Fleet, tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    cases = [
        (["--auth-token-env", "NO_SUCH_VAR_HERE"], "the environment variable NO_SUCH_VAR_HERE is not set or empty"),
        (["--ssl-certfile", str(cert)], "--ssl-certfile and --ssl-keyfile go together"),
        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "nope.pem")], "nope.pem: no such file"),
    ]
    for args, words in cases:
        result = subprocess.run([MANYMODELS, "--bundle", str(fleet.root), "serve", "demand", "--port",
                                 str(free_port()), *args], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "NO_COLOR": "1"})
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert "serving on" not in result.stdout


def test_a_port_in_use_is_one_line_before_anything_listens(fleet: Fleet) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([MANYMODELS, "--bundle", str(fleet.root), "serve", "demand", "--port", str(port)],
                                capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    assert "serving on" not in result.stdout

"""Small deterministic datasets and bundles for the tests (each segment with known ground truth)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml


def segment_frame(segments: int = 6, rows: int = 60, features: int = 3, seed: int = 0, noise: float = 0.5,
                  names: list[str] | None = None) -> pd.DataFrame:
    """label = 5 * (w_s . x) + b_s + noise for each segment s; rows shuffled."""
    rng = np.random.default_rng(seed)
    names = names or [f"seg_{i:03d}" for i in range(segments)]
    w = rng.normal(size=(len(names), features))
    b = rng.normal(scale=10, size=len(names))
    idx = np.repeat(np.arange(len(names)), rows)
    x = rng.random((len(idx), features))
    y = 5 * np.einsum("ij,ij->i", x, w[idx]) + b[idx] + rng.normal(scale=noise, size=len(idx))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame.insert(0, "segment", np.array(names, dtype=object)[idx])
    frame.insert(0, "record_id", np.arange(len(idx), dtype=np.int64))
    frame["label"] = y
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


CHANNEL_EFFECT = {"web": 6.0, "shop": 0.0, "phone": -6.0}


def with_channel(frame: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    """A text feature `channel` that moves the label, and some missing values in f1."""
    rng = np.random.default_rng(seed)
    frame = frame.assign(channel=rng.choice(list(CHANNEL_EFFECT), len(frame)))
    frame["label"] = frame["label"] + frame["channel"].map(CHANNEL_EFFECT)
    frame.loc[frame.index % 9 == 0, "f1"] = np.nan
    return frame


def model_block(**overrides: Any) -> dict[str, Any]:
    """A model family over segment_frame's columns, small and fast."""
    block: dict[str, Any] = {
        "dataset": "train",
        "segment_by": ["segment"],
        "label": "label",
        "features": ["f0", "f1", "f2"],
        "estimator": {"type": "lightgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 5}},
        "split": {"test_size": 0.25, "seed": 7},
        "metric": "rmse",
    }
    block.update(overrides)
    return block


def write_bundle(root: Path, frame: pd.DataFrame | None = None, models: dict[str, Any] | None = None,
                 tracking_uri: str | None = None, extra: dict[str, Any] | None = None,
                 score_frame: pd.DataFrame | None = None, target: dict[str, Any] | None = None) -> Path:
    """A bundle folder: data/train.parquet (+ data/score.parquet), manymodels.yml with a `weekly` job; `target`:
    settings of its `dev` target (`trust: pickle`, say)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    frame = segment_frame() if frame is None else frame
    frame.to_parquet(root / "data" / "train.parquet", index=False)
    score = frame.drop(columns=["label"], errors="ignore") if score_frame is None else score_frame
    score.to_parquet(root / "data" / "score.parquet", index=False)
    doc: dict[str, Any] = {
        "bundle": {"name": "test-bundle"},
        "variables": {"data_root": {"default": "data"}},
        "targets": {"dev": {"default": True}},
        "resources": {
            "datasets": {
                "train": {"format": "parquet", "path": "${var.data_root}/train.parquet"},
                "to_score": {"format": "parquet", "path": "${var.data_root}/score.parquet"},
            },
            "models": models if models is not None else {"demand": model_block()},
            "jobs": {
                "weekly": {
                    "tasks": [
                        {"key": "train", "train": "demand"},
                        {"key": "score", "depends_on": ["train"],
                         "score": {"model": "demand", "dataset": "to_score", "output": "out/scores.parquet"}},
                    ]
                }
            },
        },
    }
    if tracking_uri:
        doc["targets"]["dev"]["tracking_uri"] = tracking_uri
    doc["targets"]["dev"].update(target or {})
    for key, value in (extra or {}).items():
        doc[key] = value
    path = root / "manymodels.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


PICKLE_TRUSTED = {"trust": "pickle"}  # a target whose `python` estimators are saved (and loaded) with pickle


def chunked_bundle(root: Path, segments: int, rows: int, per_chunk: int) -> Path:
    """A bundle of `segments` segments of `rows` rows each, whose engine fits `per_chunk` segments a chunk (so a
    command stopped after its first segments has chunks still in flight, or finished)."""
    write_bundle(root, frame=segment_frame(segments=segments, rows=rows))
    edit_bundle(root / "manymodels.yml",
                lambda doc: doc["targets"]["dev"].update(engine={"max_chunk_rows": rows * per_chunk}))
    return root


def stop_after(segments: int) -> Callable[[int], None]:
    """An `on_progress` hook that stops the training (as Ctrl-C does) once this many segments are done."""
    done = [0]

    def hook(n: int) -> None:
        done[0] += n
        if done[0] >= segments:
            raise KeyboardInterrupt

    return hook


def edit_bundle(path: Path, change: Any) -> None:
    """Load manymodels.yml, let `change(doc)` edit it in place, write it back."""
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_delta_bundle(root: Path, frame: pd.DataFrame) -> Path:
    """write_bundle, with the `train` dataset as a Delta table (data/train_delta) holding `frame`."""
    from deltalake import write_deltalake

    path = write_bundle(root, frame=frame)
    write_deltalake(str(root / "data" / "train_delta"), frame)
    edit_bundle(path, lambda doc: doc["resources"]["datasets"].update(
        train={"format": "delta", "path": "data/train_delta"}))
    return path


def git(root: Path, *args: str) -> None:
    """A git command in `root` with a committer set (a test machine may have none configured)."""
    subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args], cwd=root, check=True,
                   capture_output=True)


def free_port() -> int:
    """A TCP port nothing listens on, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    """Wait for a server we started to answer 200 at `url`.

    Raises:
        RuntimeError: it exited or did not answer in time (with the end of its log).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own loopback server
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{url} did not come up: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


@contextmanager
def serving(project: Path, model: str = "demand", args: Sequence[str] = ()) -> Iterator[str]:
    """`manymodels serve` of a project's model (the interpreter's own script, with `args`), up on a free loopback
    port: its URL; stopped on the way out. Its output goes to serve.log in the project."""
    port, log = free_port(), project / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("manymodels")), "--bundle", str(project), "serve",
                                 model, "--port", str(port), *args], stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/ping", proc, log)
        yield url
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server a fixture started: politely, then for good after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def count_tracking_calls(monkeypatch: Any) -> list[str]:
    """Record every HTTP request MLflow's client makes ("METHOD url"; the real request still goes out), but those of a
    run's heartbeat thread, which beats by the clock: counted, they would measure the machine's speed (an earlier run's
    last beat landing after the count began made 47 calls of 46 on a loaded machine). A run's first beat, sent by the
    command itself before its work, is counted.

    Artifact transfers through the server's proxy have `/mlflow-artifacts/` in their URL.
    """
    import threading

    import requests

    calls: list[str] = []
    real = requests.Session.request

    def counting(self: requests.Session, method: str, url: str, *args: object, **kwargs: object) -> object:
        if not threading.current_thread().name.startswith("manymodels-heartbeat"):
            calls.append(f"{method} {url}")
        return real(self, method, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(requests.Session, "request", counting)
    return calls


def tracking_only(calls: list[str]) -> list[str]:
    """The calls that are not artifact transfers."""
    return [c for c in calls if "/mlflow-artifacts/" not in c]


def latest_pack(project: Any, model: str = "demand") -> Any:
    """The pack of a project's latest successful training run of `model`."""
    context = project.target_context
    return context.open_pack(context.resolve_run(model))


def open_page(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """A page opened in the test Chromium once its charts are drawn, and what went wrong while it loaded: console
    errors and warnings, script errors, dialogs (a script a segment's name smuggled in), any request beyond the file."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(f"network: {r.url}"))
    page.goto(page_file.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
    return page, problems


class TcpRelay:
    """A real TCP relay on 127.0.0.1 in front of a server: `cut()` drops every connection and refuses new ones
    (the server is unreachable, as when its host goes away), `mend()` lets them through again."""

    def __init__(self, upstream: str) -> None:
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.mend()

    def mend(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(): closing alone leaves the port accepting on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


SEASON_4 = np.array([3.0, -1.0, -4.0, 2.0])


def series_frame(segments: int = 6, steps: int = 40, seed: int = 0, noise: float = 0.3, freq: str = "W-MON",
                 names: list[str] | None = None, end: str = "2026-11-30") -> pd.DataFrame:
    """Weekly series: level + trend * t + a 4-week season * amplitude + price effect + noise, all ending on `end`.

    Columns: segment, week (dates), units (the label), price (known in advance: it moves units), region (static).
    Rows shuffled.
    """
    rng = np.random.default_rng(seed)
    names = names or [f"store_{i:02d}" for i in range(segments)]
    times = pd.date_range(end=end, periods=steps, freq=freq).as_unit("us")  # Spark reads no nanoseconds
    parts = []
    for i, name in enumerate(names):
        t = np.arange(steps)
        level, trend, amplitude = rng.uniform(50, 100), rng.normal(0, 0.5), rng.uniform(1, 4)
        price = np.round(rng.uniform(0.8, 1.2, steps), 2)
        units = level + trend * t + amplitude * SEASON_4[t % 4] - 20 * (price - 1) + rng.normal(0, noise, steps)
        parts.append(pd.DataFrame({"segment": name, "week": times, "units": units, "price": price,
                                   "region": f"r{i % 3}"}))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)


def forecast_block(**overrides: Any) -> dict[str, Any]:
    """A forecast model over series_frame's columns: small and fast."""
    block: dict[str, Any] = {
        "task": "forecast",
        "dataset": "train",
        "segment_by": ["segment"],
        "label": "units",
        "time": "week",
        "horizon": 4,
        "features": {"lags": [1, 2, 4], "calendar": ["month"], "known": ["price"], "static": ["region"]},
        "validation": {"windows": 2},
        "candidates": [
            {"name": "lgbm", "type": "lightgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 3}},
            {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
            {"name": "snaive", "type": "baseline", "method": "seasonal_naive", "period": 4},
        ],
    }
    block.update(overrides)
    return block


def future_known(frame: pd.DataFrame, steps: int = 4, freq: str = "W-MON") -> pd.DataFrame:
    """The known feature's (price's) values for each segment's next `steps` weeks."""
    last = frame.groupby("segment")["week"].max()
    rows = [(segment, end + (k + 1) * pd.tseries.frequencies.to_offset(freq), 1.0 + 0.05 * (k % 3))
            for segment, end in last.items() for k in range(steps)]
    frame = pd.DataFrame(rows, columns=["segment", "week", "price"])
    return frame.assign(week=frame["week"].astype("datetime64[us]"))  # Spark reads no nanoseconds


# The forecast model of issue 25, as written there, below its `dataset`, `segment_by` and `label` (6 spaces in):
# the unit tests validate it, the integration tests run it.
ISSUE_25_MODEL = """\
      task: forecast
      time: week                          # the time column; its frequency is inferred per fleet
      freq: W-MON                         # optional; a grid that does not fit is a located error
      horizon: 12                         # steps ahead a forecast covers
      features:
        lags: [1, 2, 3, 52]
        rolling: [{window: 4, stats: [mean, std], lag: 1}]   # over the label, ending `lag` steps back
        calendar: [week_of_year, month]   # from the time column
        known: [price, promo]             # future values are known: read from a dataset when forecasting
        static: [region]                  # constant per segment
      target_transform: [{diff: 1}]
      strategy: recursive
      gaps: error
      validation: {kind: time, windows: 3, step: 12}
      candidates:
        - {name: lgbm, type: lightgbm, params: {num_boost_round: 200, min_data_in_leaf: 5}}
        - {name: ridge, type: sklearn, entry: sklearn.linear_model.Ridge}
        - {name: naive, type: baseline, method: naive}
        - {name: snaive, type: baseline, method: seasonal_naive, period: 52}
        - {name: drift, type: baseline, method: drift}
        - {name: avg4, type: baseline, method: window_average, window: 4}
"""


# A forecast hierarchy over series_frame's columns (tests/extra: the hierarchy extra).
def hierarchy_frame() -> pd.DataFrame:
    """Six stores in three regions (r0, r1, r2: two each), weekly, with a known price."""
    return series_frame(segments=6, steps=40, seed=5, noise=1.0)


def hierarchy_block(**overrides: object) -> dict[str, object]:
    made = forecast_block(segment_by=["region", "segment"], hierarchy=["region", "segment"],
                          features={"lags": [1, 2, 4], "known": ["price"]}, validation={"windows": 5}, candidates=[
                              {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
                              {"name": "lgbm", "type": "lightgbm",
                               "params": {"num_boost_round": 20, "min_data_in_leaf": 3}},
                          ])
    made.update(overrides)
    return made


def same_levels_on(api: Any, on_spark: Any, first: str) -> None:
    """A Spark project trains the levels as the local run `first` did, and evaluates them alike."""
    local = api.manifest("demand", run_id=first)
    remote = on_spark.train("demand").manifest
    judged = on_spark.evaluate("demand", run_id=first, save=False).table
    mine = api.evaluate("demand", run_id=first, save=False).table
    order = ["region", "segment"]
    np.testing.assert_allclose(judged.sort_values(order, na_position="last")["challenger"].to_numpy(dtype=float),
                               mine.sort_values(order, na_position="last")["challenger"].to_numpy(dtype=float),
                               atol=1e-9)
    key = ["region", "segment"]
    a = local.sort_values(key, na_position="last").reset_index(drop=True)
    b = remote.sort_values(key, na_position="last").reset_index(drop=True)
    assert (b["status"] == "ok").all(), b["error"].tolist()
    assert a["candidate"].tolist() == b["candidate"].tolist() and a["rows"].tolist() == b["rows"].tolist()
    np.testing.assert_allclose(a["rmse"].to_numpy(), b["rmse"].to_numpy(), atol=1e-9)


def bundle_problems(root: Path, text: str, data: pd.DataFrame | None = None) -> list[str]:
    """Every problem `validate` reports for a bundle's text (manymodels.yml in `root`); with `data` (written as
    sales.parquet), its rows too."""
    from manymodels.bundle import check_bundle, load_config
    from manymodels.errors import BundleError

    path = root / "manymodels.yml"
    path.write_text(text)
    if data is not None:
        data.to_parquet(root / "sales.parquet", index=False)
    try:
        config = load_config(path)
    except BundleError as exc:
        return exc.problems
    return check_bundle(config, data=data is not None)

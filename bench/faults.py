"""Reliability figures (issue 16): how many fault cases were tried and how many ended well, per kind.

    python bench/faults.py [--flips 60] [--batch-flips 600] [--out bench/out/faults]

Every case runs the real CLI in a process of its own (faults injected at named points with MANYMODELS_FAULT,
a real `mlflow server` behind a TCP relay that is cut, stalled or mended, real files damaged on disk). A case
"ends well" when the command gives one clear line with the right exit code in bounded time, nothing hangs or
crashes, no process outlives it, and the next ordinary command works. Prints a table and writes faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from flips import CAUGHT, FALLBACK, RAW, SAME, VERIFY, WRONG, judge, pack_files, predictions  # noqa: E402

from helpers import TcpRelay, free_port, segment_frame, stop_process, wait_until_up, write_bundle  # noqa: E402

MANYMODELS = str(Path(sys.executable).with_name("manymodels"))
MARK = "MANYMODELS_TEST_MARK"


class Results:
    def __init__(self) -> None:
        self.cases: list[dict[str, Any]] = []

    def add(self, kind: str, case: str, ok: bool, seconds: float, detail: str = "") -> None:
        self.cases.append({"kind": kind, "case": case, "ok": ok, "seconds": round(seconds, 2), "detail": detail})
        print(f"{'ok ' if ok else 'BAD'} {kind:<10} {case:<58} {seconds:6.1f} s  {detail[:110]}", flush=True)


def need(ok: bool, what: str) -> None:
    """Stop the bench when its own set-up fails (not a fault case)."""
    if not ok:
        raise SystemExit(f"set-up failed: {what[-2000:]}")


def cli(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [MANYMODELS, "--bundle", str(root), *args], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "COLUMNS": "200", **(env or {})}, check=False)
    except subprocess.TimeoutExpired:
        return -999, "TIMEOUT", time.monotonic() - started
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def clear(out: str) -> bool:
    """One clear error: no traceback, no raw Python exception name as the error."""
    return "Traceback" not in out and "(--debug shows the traceback)" not in out


def marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def project(root: Path, segments: int = 24, rows: int = 200, tracking_uri: str | None = None,
            tracking: dict[str, Any] | None = None, fallback: bool = False) -> Path:
    write_bundle(root, frame=segment_frame(segments=segments, rows=rows), tracking_uri=tracking_uri)
    doc = yaml.safe_load((root / "manymodels.yml").read_text())
    doc["bundle"]["name"] = f"faults-{uuid.uuid4().hex[:8]}"
    doc["targets"]["dev"]["engine"] = {"max_chunk_rows": 400}
    if tracking:
        doc["targets"]["dev"]["tracking"] = tracking
    if fallback:
        doc["resources"]["models"]["demand"]["fallback"] = "global"
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


# Hostile bundles -------------------------------------------------------------------------------------------------

def hostile_bundles(base: Path, results: Results) -> None:
    bomb = ["bundle: {name: bomb}", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.append("resources: {models: {m: *a9}}")
    head = "bundle: {name: hostile}\n"
    cases: dict[str, tuple[str, Callable[[Path], None] | None]] = {
        "anchor bomb, 9 levels": ("\n".join(bomb) + "\n", None),
        "alias inside its own anchor": (head + "resources: &r {models: {m: *r}}\n", None),
        "100,000 nested lists": (head + "resources: " + "[" * 100_000 + "]" * 100_000 + "\n", None),
        "3,000 nested mappings": (head + "resources: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", None),
        "python object tag": (head + 'resources: !!python/object/apply:os.system ["echo pwned"]\n', None),
        "duplicate key": (head + "resources: {}\nresources: {}\n", None),
        "a list, not a mapping": ("- 1\n- 2\n", None),
        "invalid UTF-8": ("", lambda d: _write(d / "manymodels.yml", b"bundle: {name: \xff\xfe}\n")),
        "2 MB file": ("", lambda d: _write(d / "manymodels.yml", b"# " + b"x" * (2 << 20) + b"\n")),
        "include ../": (head + "include: ['../outside.yml']\n", None),
        "include an absolute path": (head + "include: ['/etc/passwd']\n", None),
        "include ~": (head + "include: ['~/x.yml']\n", None),
        "include a link out of the folder": (head + "include: ['link.yml']\n",
                                             lambda d: (d / "link.yml").symlink_to("/etc/hostname")),
        "include a named pipe": (head + "include: ['pipe.yml']\n", lambda d: os.mkfifo(d / "pipe.yml")),
        "include a folder": (head + "include: ['dir.yml']\n", lambda d: (d / "dir.yml").mkdir()),
        "include a binary file": (head + "include: ['bin.yml']\n",
                                  lambda d: _write(d / "bin.yml", bytes(range(256)))),
        "include a 2 MB file": (head + "include: ['big.yml']\n",
                                lambda d: _write(d / "big.yml", b"# " + b"x" * (2 << 20))),
        "include a glob reaching out": (head + "include: ['**/../../*.yml']\n", None),
        "tab-indented garbage": (head + "resources:\n\t- : :\n", None),
        "5,000-character key": (head + "resources: {" + "k" * 5000 + ": 1}\n", None),
    }
    for name, (text, setup) in cases.items():
        folder = base / f"bundle-{len(results.cases)}"
        folder.mkdir(parents=True)
        if text:
            (folder / "manymodels.yml").write_text(text)
        if setup is not None:
            setup(folder)
        if not (folder / "manymodels.yml").exists():
            (folder / "manymodels.yml").write_text(head)
        code, out, seconds = cli(folder, "validate", timeout=60)
        lines = [line for line in out.splitlines() if line.strip()]
        ok = code == 2 and clear(out) and seconds < 10 and all(len(line) < 600 for line in lines)
        results.add("bundle", name, ok, seconds, lines[0] if lines else out)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# Hostile data values ---------------------------------------------------------------------------------------------

HOSTILE = ["[/]", "[bold red]x", "a[/b]", ":smile:", "[link=http://e]y", "\\[esc]", "[", "]", "\x1b[31mred",
           "cr\rhidden", "x" * 300, "'; DROP TABLE runs; --", "../../etc/passwd", "$(touch /tmp/pwned)", "ü\u202eevil",
           "null", "", " "]


def hostile_values(base: Path, results: Results) -> None:
    root = base / "values"
    frame = segment_frame(segments=len(HOSTILE), rows=40, names=HOSTILE)
    write_bundle(root, frame=frame)
    outputs = {}
    for args in (["train", "demand", "--workers", "1"], ["evaluate", "demand"], ["promote", "demand"],
                 ["runs", "demand"], ["summary"], ["run", "weekly"]):
        code, out, _ = cli(root, *args)
        outputs[args[0]] = (code, out)
    for value in HOSTILE:
        shown = value.encode("unicode_escape").decode()
        for command, (code, out) in outputs.items():
            ok = code == 0 and "\x1b" not in out and "\r" not in out and "😄" not in out
            results.add("data", f"{shown[:24]!s} via {command}", ok, 0.0, "" if ok else out[-200:])
    escaped = list(Path("/tmp").glob("pwned"))
    results.add("data", "no value ran as a command or left the store", not escaped, 0.0)


# Corrupted artifacts ---------------------------------------------------------------------------------------------

def corrupted(base: Path, results: Results, flips: int, batch: int) -> None:
    root = project(base / "corrupt", fallback=True)
    code, out, _ = cli(root, "train", "demand", "--workers", "2")
    need(code == 0, out)
    pack = next((root / ".manymodels" / "artifacts").glob("*/*/artifacts/model/pack"))
    rows = segment_frame(segments=24, rows=200).groupby("segment").head(3).reset_index(drop=True)
    rows_file = base / "rows.parquet"
    rows.to_parquet(rows_file)
    expected = predictions(pack, rows)
    fallback = predictions(pack / "fallback", rows)[0]
    good = {SAME, CAUGHT, FALLBACK, VERIFY}
    for path in pack_files(pack):
        for how in ("truncate to 0", "truncate to half", "cut the last byte", "delete"):
            copy = base / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(pack, copy)
            target = copy / path.relative_to(pack)
            data = target.read_bytes()
            if how == "delete":
                target.unlink()
            else:
                target.write_bytes({"truncate to 0": b"", "truncate to half": data[: len(data) // 2],
                                    "cut the last byte": data[:-1]}[how])
            started = time.monotonic()
            outcome, detail = judge(copy, rows, expected, fallback)
            results.add("artifact", f"{how}: {path.relative_to(pack)}", outcome in good, time.monotonic() - started,
                        f"{outcome}: {detail}")
    script = HERE.parent / "tests" / "flips.py"
    for number in range(flips):  # one process per flip: a crash or a hang is counted, not fatal
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, str(script), str(pack), str(rows_file), "--flips", "1",  # noqa: S603
                                   "--first", str(number), "--seed", "7"], capture_output=True, text=True,
                                  timeout=120, check=False)
            if done.returncode != 0:
                outcome, detail = f"CRASH ({done.returncode})", done.stderr[-200:]
            else:
                found = json.loads(done.stdout)[0]
                outcome, detail = found["outcome"], f"{found['file']} byte {found['offset']}: {found['detail']}"
        except subprocess.TimeoutExpired:
            outcome, detail = "HANG", ""
        results.add("artifact", f"bit flip {number} (own process)", outcome in good, time.monotonic() - started,
                    f"{outcome}: {detail}")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(pack), str(rows_file), "--flips", str(batch),  # noqa: S603
                           "--first", "1000", "--seed", "7"], capture_output=True, text=True, timeout=1800,
                          check=False)
    found = json.loads(done.stdout) if done.returncode == 0 else []
    tally: dict[str, int] = {}
    for item in found:
        tally[item["outcome"]] = tally.get(item["outcome"], 0) + 1
    bad = sum(n for o, n in tally.items() if o in (WRONG, RAW))
    results.add("artifact", f"{batch} bit flips in one process", done.returncode == 0 and bad == 0 and
                len(found) == batch, time.monotonic() - started, json.dumps(tally))
    for item in found:
        results.cases.append({"kind": "artifact-batch", "case": f"flip {item['flip']}", "ok": item["outcome"] in good,
                              "seconds": 0.0, "detail": item["outcome"]})


# Kill points -----------------------------------------------------------------------------------------------------

def kill_points(base: Path, results: Results) -> None:
    root = project(base / "kills")
    code, out, _ = cli(root, "deploy")
    need(code == 0, out)
    cases = [
        ("train", "train.fitting:kill", ["train", "demand", "--workers", "2"], -9),
        ("train", "train.fitting:term", ["train", "demand", "--workers", "2"], 143),
        ("train", "train.fitting:raise", ["train", "demand", "--workers", "2"], 1),
        ("train", "train.fitting:kill,fit.segment:sleep", ["train", "demand", "--workers", "2"], -9),
        ("train", "fit.segment:kill", ["train", "demand", "--workers", "2"], None),  # every worker dies
        ("train", "tracking.finishing:kill", ["train", "demand", "--workers", "2"], -9),
        ("promote", "promote.registered:kill", ["promote", "demand", "--all"], -9),
        ("promote", "promote.previous_moved:kill", ["promote", "demand", "--all"], -9),
        ("promote", "promote.previous_moved:raise", ["promote", "demand", "--all"], 1),
        ("promote", "promote.registered:term", ["promote", "demand", "--all"], 143),
        ("promote", "promote.composed:kill", ["promote", "demand", "--all"], -9),  # a partial pack: removed next
        ("deploy", "deploy.created:kill", ["deploy"], -9),
        ("deploy", "deploy.created:term", ["deploy"], 143),
        ("run", "train.fitting:kill", ["run", "weekly"], -9),
        ("run", "train.fitting:term", ["run", "weekly"], 143),
    ]
    code, out, _ = cli(root, "train", "demand", "--workers", "2")
    code2, out2, _ = cli(root, "promote", "demand")
    need(code == 0 and code2 == 0, out + out2)
    for command, fault, args, expected in cases:
        mark = uuid.uuid4().hex
        code, out, seconds = cli(root, *args, env={"MANYMODELS_FAULT": fault, MARK: mark})
        deadline = time.monotonic() + 5
        while marked(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = marked(mark)
        for pid in left:
            os.kill(pid, 9)
        died = expected is None or code == expected
        after = {"train": ["train", "demand", "--workers", "2"], "promote": ["promote", "demand", "--all"],
                 "deploy": ["deploy"], "run": ["run", "weekly"]}[command]
        if command == "train":  # a training that died or was stopped is finished with --resume
            import manymodels as mm

            latest = mm.load_bundle(root).runs("demand")[0]
            if latest.status == "dead" or latest.status == "failed" and "manymodels.segments" not in latest.tags:
                after = ["train", "demand", "--resume", latest.run_id, "--workers", "2"]
        next_code, next_out, _ = cli(root, *after)
        aliases = _aliases(root)
        consistent = aliases.get("champion") is not None and aliases.get("previous") != aliases.get("champion")
        # an injected exception is no ManymodelsError: one line naming it, as any unexpected error, is right
        readable = "fault injected at" in out and "Traceback" not in out if fault.endswith(":raise") else clear(out)
        ok = died and not left and next_code == 0 and consistent and readable
        then = " ".join(after[:4])
        detail = f"exit {code}, {len(left)} processes left, next {then} exit {next_code}, aliases {aliases}"
        if next_code:
            detail += " " + next_out[-200:]
        results.add("kill", f"{' '.join(args[:2])} at {fault}", ok, seconds, detail)


# Trust: a planted pickle, signatures -----------------------------------------------------------------------------

def trust_cases(base: Path, results: Results) -> None:
    """A scikit-learn fleet whose champion's model is replaced by a pickle that creates a file when loaded, the
    manifest's checksums recomputed (what checksums cannot catch); then the same with a signing key. Every command
    that reads the champion must refuse it (exit 1, one line) and the file must never appear."""
    import secrets

    sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
    from test_trust import RIDGE, plant

    root = base / "trust"
    write_bundle(root, frame=segment_frame(segments=6, rows=60))
    doc = yaml.safe_load((root / "manymodels.yml").read_text())
    doc["bundle"]["name"] = f"faults-{uuid.uuid4().hex[:8]}"
    doc["resources"]["models"]["demand"]["estimator"] = RIDGE
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for step in (["train", "demand", "--workers", "1"], ["promote", "demand"]):
        code, out, _ = cli(root, *step)
        need(code == 0, out)

    def champion_pack() -> Path:
        import manymodels as mm

        run_id = mm.load_bundle(root).versions("demand")[0].run_id
        (pack,) = (root / ".manymodels" / "artifacts").glob(f"*/{run_id}/artifacts/model/pack")
        return pack

    commands = [["score", "demand", "--data", "to_score", "--out", str(base / "trust-scores.parquet")],
                ["evaluate", "demand"], ["verify", "demand"], ["train", "demand", "--changed-only", "--workers", "1"],
                ["monitor", "demand", "--data", "to_score"]]

    def attempt(label: str, marker: Path, wanted: str) -> None:
        for args in commands:
            code, out, seconds = cli(root, *args)
            if args[0] == "train" and wanted == "pickle":  # the pickled model is trained again, never carried
                ok = code == 0 and "saved with pickle" in out and not marker.exists()
            else:
                ok = code == 1 and wanted in out and clear(out) and not marker.exists() and len(
                    [line for line in out.splitlines() if line.startswith("error:")]) == 1
            results.add("trust", f"{label}: {' '.join(args[:2])}", ok, seconds,
                        f"exit {code}, code ran: {marker.exists()}, {out.strip().splitlines()[-1][:90] if out else ''}")

    marker = base / "trust-code-ran"
    plant(champion_pack(), marker)
    attempt("planted pickle, no key", marker, "pickle")
    key = base / "trust.key"
    key.write_text(secrets.token_hex(32))
    doc["targets"]["dev"].update({"signing_key": {"file": str(key)}, "trust": "pickle"})
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    attempt("unsigned pack, key and trust: pickle", marker, "not signed")
    for step in (["train", "demand", "--workers", "1"], ["promote", "demand", "--all"]):
        code, out, _ = cli(root, *step)
        need(code == 0, out)
    plant(champion_pack(), marker, segment_index=2)
    attempt("signed pack, planted", marker, "changed after it was signed")


def _aliases(root: Path) -> dict[str, int]:
    import manymodels as mm

    versions = mm.load_bundle(root).versions("demand")
    return {alias: v.version for v in versions for alias in v.aliases}


# Tracking server faults ------------------------------------------------------------------------------------------

class Silent:
    """A port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def tracking_faults(base: Path, results: Results) -> None:
    server_root = base / "server"
    server_root.mkdir()
    port = free_port()
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    log = open(server_root / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port),  # noqa: S603
                             "--backend-store-uri", f"sqlite:///{server_root / 'mlflow.db'}",
                             "--artifacts-destination", str(server_root / "artifacts"), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=server_root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", proc, server_root / "server.log")
        relay = TcpRelay(url)
        silent = Silent()
        root = project(base / "tracked", tracking_uri=relay.url)
        code, out, _ = cli(root, "train", "demand", "--workers", "2")
        need(code == 0, out)
        commands = [["train", "demand", "--workers", "2"], ["score", "demand", "--data", "to_score", "--out",
                                                              str(root / "s.parquet")],
                    ["promote", "demand"], ["runs", "demand"], ["evaluate", "demand"], ["deploy"]]
        relay.cut()
        for args in commands:
            code, out, seconds = cli(root, *args)
            results.add("tracking", f"refused at start: {args[0]}", code == 2 and clear(out) and seconds < 30,
                        seconds, out.strip().splitlines()[-1] if out.strip() else "")
        relay.mend()
        silent_root = project(base / "silent", tracking_uri=silent.url)
        for args in commands:
            code, out, seconds = cli(silent_root, *args)
            results.add("tracking", f"never answers at start: {args[0]}", code == 2 and clear(out) and seconds < 30,
                        seconds, out.strip().splitlines()[-1] if out.strip() else "")
        # the server goes away while a training run is logged (defaults: timeout 15 s, 5 retries)
        faults = (("dies while a run is logged", "cut"), ("restarts (20 s) while a run is logged", "restart"))
        for label, action in faults:
            gate = base / f"gate-{label[:4]}-{uuid.uuid4().hex[:6]}"
            env = {**os.environ, "MANYMODELS_FAULT": "tracking.finishing:pause", "MANYMODELS_FAULT_GATE": str(gate),
                   "COLUMNS": "200"}
            train = subprocess.Popen([MANYMODELS, "--bundle", str(root), "train", "demand", "--workers", "2"],  # noqa: S603
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            deadline = time.monotonic() + 120
            while not Path(f"{gate}.paused").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            relay.cut()
            started = time.monotonic()
            gate.touch()
            if action == "restart":
                time.sleep(20)
                relay.mend()
            out, _ = train.communicate(timeout=600)
            seconds = time.monotonic() - started
            if action == "cut":
                kept = list((root / ".manymodels" / "unsent").glob("*"))
                ok = train.returncode == 1 and clear(out) and len(kept) == 1
                relay.mend()
                code, up, _ = cli(root, "upload")
                ok = ok and code == 0 and not kept[0].exists()
                results.add("tracking", label + ", then upload", ok, seconds,
                            f"exit {train.returncode}; upload exit {code}: {up.strip().splitlines()[-1]}")
            else:
                results.add("tracking", label, train.returncode == 0, seconds, f"exit {train.returncode}")
    finally:
        stop_process(proc)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=60, help="bit flips, each read in a process of its own")
    parser.add_argument("--batch-flips", type=int, default=600, help="bit flips read in one process")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "faults")
    parser.add_argument("--only", nargs="*", default=["bundle", "data", "artifact", "kill", "tracking", "trust"])
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    results = Results()
    steps = {"bundle": lambda: hostile_bundles(args.out, results), "data": lambda: hostile_values(args.out, results),
             "artifact": lambda: corrupted(args.out, results, args.flips, args.batch_flips),
             "kill": lambda: kill_points(args.out, results), "tracking": lambda: tracking_faults(args.out, results),
             "trust": lambda: trust_cases(args.out, results)}
    for name in args.only:
        steps[name]()
    (args.out / "faults.json").write_text(json.dumps(results.cases, indent=1))
    print("\nkind        tried  ended well")
    kinds: dict[str, list[bool]] = {}
    for case in results.cases:
        kinds.setdefault(case["kind"], []).append(case["ok"])
    for kind, oks in kinds.items():
        print(f"{kind:<12}{len(oks):>5}  {sum(oks):>10}")
    slowest = max((c["seconds"] for c in results.cases if c["kind"] == "tracking"), default=0.0)
    print(f"longest wait on a tracking server fault: {slowest:.1f} s")
    return 0 if all(c["ok"] for c in results.cases) else 1


if __name__ == "__main__":
    sys.exit(main())

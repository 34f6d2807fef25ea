"""`Target`: a bundle resolved for one target, with what every task looks up on it.

Built once per command (or per Python API project) and passed to every task: the resolved
bundle, one tracking client built on first use, the engine to run on, and the naming and
lookup the tasks share (experiment, registered model, staging, which run serves, its pack).
Task modules depend on this module, never on each other for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from manymodels.bundle import BundleConfig, ModelSpec
from manymodels.bundle.columns import model_features
from manymodels.bundle.data_checks import model_problems
from manymodels.bundle.forecast_checks import time_kind_of
from manymodels.data import is_delta_table, read_frame, read_head, read_schema, row_count
from manymodels.data.timegrid import GridError, infer_freq, parse_times
from manymodels.engines import Dataset, Engine, make_engine, open_engine
from manymodels.errors import BundleError, DataError, RegistryError
from manymodels.estimators import allow_pickle
from manymodels.jobs.specs import forecast_plan, selection_spec
from manymodels.registry.manifest import PackLayout
from manymodels.registry.mlflow_env import bound_http, check_reachable
from manymodels.registry.pack import Pack, publish_pack
from manymodels.registry.provenance import current_user
from manymodels.registry.references import pack_references
from manymodels.registry.run_state import STATUS_OK, TAG, RunInfo, is_run_id, local_path
from manymodels.registry.signing import SignatureError, current_key, read_key, use_environment_key, use_key
from manymodels.registry.version_info import CHAMPION, VersionInfo
from manymodels.segment import SegmentSpec
from manymodels.segment.forecast_windows import with_naive
from manymodels.segment.shards import is_url

if TYPE_CHECKING:  # MLflow is imported when a command first asks for the tracker, after its engine started
    from manymodels.registry.tracking import Tracker
    from manymodels.registry.versions import ModelRegistry


def install_trust(config: BundleConfig) -> None:
    """This process's trust, as the target says (README: trust model): whether models saved with pickle load
    (`trust: pickle`, else `MANYMODELS_TRUST`), and the key packs are signed and checked with (`signing_key`, else
    `MANYMODELS_SIGNING_KEY`). An engine's workers are handed the first; they never need the key (the packs they read
    were checked here).

    Raises:
        BundleError: the key's variable is not set, its file does not read, or the key is too short.
    """
    resolved = config.resolved
    allow_pickle(True if resolved.trust == "pickle" else None)
    spec = resolved.signing_key
    try:
        if spec is None:
            use_environment_key()
            current_key()  # a key in the environment that is too short is found now
        else:
            use_key(read_key(spec.env, config.resolve_path(spec.file) if spec.file else None))
    except BundleError as exc:
        use_key(None)
        raise BundleError(f"{config.where(('signing_key',))}{exc}") from None


def trust_problems(config: BundleConfig) -> list[str]:
    """What `install_trust` finds wrong (validate's lines), installing the trust when nothing is."""
    try:
        install_trust(config)
    except BundleError as exc:
        return exc.problems
    return []


class Target:
    """A bundle resolved for one target, and the lookups every task shares.

    Args:
        config: the bundle resolved for the target.
        spark: a SparkSession to run every fleet operation on (a notebook's), whatever the target's
            engine; handed to the engine untouched, never used here.
        keep_session: keep a Spark session the engine builds open from one operation to the next
            (the Python API: frames it returns stay usable, the JVM starts once) until `close`.
    """

    def __init__(self, config: BundleConfig, spark: Any = None, keep_session: bool = False) -> None:
        install_trust(config)
        self.config = config
        self.spark = spark
        self.keep_session = keep_session
        self._kept: Engine | None = None

    @property
    def name(self) -> str:
        """The target's name."""
        return self.config.target

    @property
    def unsent(self) -> Path:
        """Where runs whose end the tracking server missed keep their files until `upload` logs them."""
        return self.config.embedded_dir / "unsent"

    @cached_property
    def tracker(self) -> Tracker:
        """The target's tracking client (one per target, built on first use), MLflow's HTTP waits bounded by the
        target's `tracking:` settings; a server that does not answer is an error here, before any work.

        Raises:
            TrackingUnreachable: the tracking server does not answer (exit 2).
        """
        spec = self.config.resolved.tracking
        bound_http(spec.timeout_s, spec.retries)
        check_reachable(self.config.tracking_uri, timeout=min(spec.timeout_s, 5.0))
        from manymodels.registry.tracking import Tracker

        return Tracker(self.config.tracking_uri, self.config.embedded_artifacts)

    def model(self, name: str) -> ModelSpec:
        """A model family of the bundle (a BundleError naming the families when there is none)."""
        return self.config.model(name)

    # Engines ---------------------------------------------------------------------------------

    @contextmanager
    def engine(self, engine: Engine | None = None, workers: int | None = None) -> Iterator[Engine]:
        """The engine to run on: `engine` as given (a job's, left open), else the target's, closed afterwards.

        With `keep_session`, a Spark engine is built once and kept (see `close`).
        """
        if engine is not None:
            yield engine
            return
        spec = self.config.resolved.engine
        if self.keep_session and (spec.kind == "spark" or self.spark is not None):
            if self._kept is None:
                self._kept = make_engine(spec.kind, spec.workers, spec.spark_options(), session=self.spark,
                                         max_chunk_rows=spec.max_chunk_rows)
            yield self._kept
            return
        with open_engine(spec, spark=self.spark, workers=workers) as opened:
            yield opened

    def close(self) -> None:
        """Stop a Spark session kept for this target (one it built; a session given to it is left running)."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def reachable_pack(self, engine: Engine, info: RunInfo, pack: Pack) -> str:
        """Where `engine`'s workers can read a run's pack: in place, or copied once to engine.staging on a cluster."""
        shared = self.staging("packs", info.run_id)
        if shared is not None and not engine.is_local and isinstance(pack.root, Path):
            return publish_pack(pack.root, shared)
        return str(pack.root)

    # Names -----------------------------------------------------------------------------------

    def development_prefix(self) -> str:
        """`dev_<user>_` for a target in `mode: development` (two people's deployments never collide), else ''."""
        if self.config.resolved.mode != "development":
            return ""
        user = "".join(c if c.isalnum() else "_" for c in current_user().split("@")[0].lower()) or "unknown"
        return f"dev_{user}_"

    def experiment(self, model: str) -> str:
        """The MLflow experiment of a model family (its last part prefixed in development mode)."""
        spec = self.model(model)
        name = spec.experiment or f"{self.config.name}/{self.config.target}/{model}"
        folder, sep, leaf = name.rpartition("/")
        return f"{folder}{sep}{self.development_prefix()}{leaf}"

    def registered_name(self, model: str) -> str:
        """The MLflow registered model of a family: `registered_model`, else `<bundle>.<target>.<model>`."""
        spec = self.model(model)
        return self.registry_name(spec.registered_model or f"{self.config.name}.{self.config.target}.{model}")

    def registry_name(self, raw: str) -> str:
        """A registered model name for the target: characters MLflow may refuse replaced, development prefix added."""
        return self.development_prefix() + "".join(c if c.isalnum() or c in "_.-" else "_" for c in raw)

    def registry(self, model: str) -> ModelRegistry:
        """The registered model of a family on the target's tracking server."""
        from manymodels.registry.versions import ModelRegistry

        return ModelRegistry(self.tracker, self.registered_name(model))

    def staging(self, *parts: str) -> str | None:
        """A folder under the target's engine.staging (a URL, or a path relative to the bundle); None if unset."""
        root = self.config.resolved.engine.staging
        if root is None:
            return None
        return "/".join([root.rstrip("/") if is_url(root) else str(self.config.resolve_path(root)), *parts])

    # Runs and packs --------------------------------------------------------------------------

    def champion(self, model: str) -> VersionInfo | None:
        """The version alias `champion` points at, if any."""
        return self.registry(model).by_alias(CHAMPION)

    def resolve_run(self, model: str, run_id: str | None = None) -> RunInfo:
        """The run named, else the model's latest successful training run.

        Raises:
            RegistryError: no such run, a run of another model, a failed run, or none trained yet.
        """
        if run_id:
            info = self.tracker.run(run_id)
            if info.model != model:
                raise RegistryError(f"run {run_id} is a run of model {info.model or '?'!r}, not {model!r}")
            if info.status != STATUS_OK:
                raise RegistryError(
                    f"run {run_id} did not finish successfully (status {info.status}); it has no models"
                )
            return info
        runs = self.tracker.runs(self.experiment(model), model, only_ok=True, limit=1)
        if not runs:
            raise RegistryError(
                f"model {model!r} has no successful training run on target {self.name!r} "
                f"(run `manymodels train {model}` first)"
            )
        return runs[0]

    def resolve_serving(self, model: str, run_id: str | None = None) -> tuple[RunInfo, int | None]:
        """The run whose pack serves: the one named, else the champion version's, else the latest training run.

        Returns:
            The run, and the champion's version number when the champion serves.
        """
        if run_id:
            return self.resolve_run(model, run_id), None
        champion = self.champion(model)
        if champion is None:
            return self.resolve_run(model), None
        return self.tracker.run(champion.run_id), champion.version

    def resolve_version(self, model: str, version: int) -> RunInfo:
        """The run a registered version serves: its training run, or the promotion run that composed it.

        Raises:
            RegistryError: no such version.
        """
        found = self.registry(model).get(version)
        if found.tags.get(TAG + "kind") == "run":
            return self.resolve_run(model, found.run_id)
        return self.tracker.run(found.run_id)

    def open_pack(self, info: RunInfo) -> Pack:
        """The pack of a run, read in place or downloaded once into .manymodels/cache.

        Raises:
            SignatureError: with a signing key, the pack is unsigned or its signature does not verify.
        """
        root = self.local_pack(info, PackLayout.IN_RUN, self.config.embedded_dir / "cache")
        try:
            return Pack(root)
        except SignatureError as exc:
            hint = (f" (if its files are as trained, sign it once: manymodels sign {info.model} --run {info.run_id})"
                    if exc.unsigned else "")
            raise SignatureError(f"run {info.run_id} is refused, none of its models loaded: {exc}{hint}",
                                 unsigned=exc.unsigned) from None

    def forget_download(self, run_id: str, serving: bool = False) -> None:
        """Drop the copy of a run's files downloaded from a remote store (`serving`: a server's), so the next use
        downloads them afresh; nothing for a store on this machine, which is read in place."""
        if is_run_id(run_id):  # an id from MLflow, checked before it names a folder
            cache = self.config.embedded_dir / "cache"
            shutil.rmtree((cache / "serve" if serving else cache) / run_id, ignore_errors=True)

    def local_pack(self, info: RunInfo, path: str, cache: Path) -> Path:
        """A run's pack folder (at `path` in its artifacts) on this machine, with the packs of the runs it refers to
        (a changed-only run's carried models) downloaded beside it when the store is remote."""
        local = self.tracker.local_artifacts(info, path, cache)
        if local_path(info.artifact_uri) is None:
            root = local if path == PackLayout.IN_RUN else local / PackLayout.PACK
            for run in pack_references(root)[1]:
                self.tracker.local_artifacts(self.tracker.run(run), path, cache)
        return local

    # Data ------------------------------------------------------------------------------------

    def dataset(self, model: str) -> Dataset:
        """A model family's training dataset.

        Raises:
            BundleError: the model names no dataset of the bundle.
        """
        name = self.model(model).dataset
        ds = self.config.resolved.resources.datasets.get(name)
        if ds is None:
            where = self.config.where(("resources", "models", model, "dataset"))
            raise BundleError(f"{where}resources.models.{model}.dataset: no dataset {name!r}")
        return Dataset(self.config.resolve_path(ds.path), ds.format, tuple(ds.na_values))

    def rows_of(self, model: str) -> int | None:
        """The row count of a model family's dataset, read from its metadata when the format keeps one."""
        dataset = self.dataset(model)
        return row_count(Path(dataset.path), dataset.fmt)

    def locate(self, data: str | Path) -> Dataset:
        """A bundle dataset by name, or a path: a Delta table folder, CSV by suffix, else Parquet."""
        datasets = self.config.resolved.resources.datasets
        if isinstance(data, str) and data in datasets:
            ds = datasets[data]
            return Dataset(self.config.resolve_path(ds.path), ds.format, tuple(ds.na_values))
        path = Path(data)
        if is_delta_table(path):
            return Dataset(path, "delta")
        return Dataset(path, "csv" if path.suffix.lower() == ".csv" else "parquet")

    def source(self, data: str | Path | Any) -> Any:
        """What an engine reads: a bundle dataset or a file as a `Dataset`, a frame (pandas or the engine's) as is.

        Raises:
            DataError: a name or path that is neither a dataset of the bundle nor a file or Delta table.
        """
        if not isinstance(data, str | Path):
            return data
        found = self.locate(data)
        datasets = self.config.resolved.resources.datasets
        path = Path(found.path)
        if not (isinstance(data, str) and data in datasets) and not (path.is_file() or is_delta_table(path)):
            raise DataError(
                f"{data}: neither a dataset of the bundle ({', '.join(datasets) or 'none'}) nor a file or Delta table"
            )
        return found

    def columns_of(self, source: Any) -> list[str] | None:
        """A source's columns (a file's schema, a frame's columns); None for an engine's own frame."""
        if isinstance(source, Dataset):
            return list(read_schema(Path(source.path), source.fmt, source.na_values).names)
        if isinstance(source, pd.DataFrame):
            return list(source.columns)
        columns = getattr(source, "columns", None)
        return list(columns) if columns is not None else None

    def read_input(self, data: str | Path | pd.DataFrame) -> pd.DataFrame:
        """A frame: given as is, or a dataset of the bundle or a file, read whole."""
        found = self.source(data)
        return read_frame(Path(found.path), found.fmt, None, found.na_values) if isinstance(found, Dataset) else found

    def segment_spec(
        self, model: str, features: Sequence[str], time_kind: str = "date", freq: str | None = None
    ) -> SegmentSpec:
        """The picklable per-segment recipe of a model family (a forecast's grid: `time_kind`, and `freq` when the
        bundle does not state it)."""
        spec = self.model(model)
        root = self.config.root
        roots = [str(root / "src"), str(root)] if (root / "src").is_dir() else [str(root)]
        # With candidates, the fallback (and anything fitting one estimator) takes the first that is not a baseline.
        # (a statistical model, fitted on one series' values, cannot be one model over many: LightGBM stands in)
        first = next((c for c in spec.candidate_specs if c.type not in ("baseline", "ensemble", "statsforecast")),
                     None)
        validation = candidates = None
        if spec.validation is not None or spec.task == "forecast":
            validation, candidates = selection_spec(spec)
        forecast = forecast_plan(spec, time_kind, freq) if spec.task == "forecast" else None
        made = SegmentSpec(
            segment_by=tuple(spec.segment_by),
            label=spec.label,
            features=tuple(features),
            estimator=first.type if first is not None else "lightgbm",
            entry=first.entry if first is not None else None,
            params=dict(first.params) if first is not None else {},
            test_size=spec.split.test_size,
            seed=spec.split.seed,
            split_by=spec.split.by,
            cutoff=spec.split.cutoff,
            min_rows=spec.min_rows,
            metric=spec.primary_metric,
            import_roots=tuple(roots),
            impute=spec.impute,
            candidates=candidates or (),
            validation=validation,
            task=spec.task if spec.task != "forecast" else "regression",
            forecast=forecast,
            refit=spec.refit,
            regret=spec.selection.regret,
        )
        return with_naive(made)

    def training_spec(self, model: str) -> tuple[SegmentSpec, Dataset]:
        """A model family's recipe and dataset; its columns checked against the file's schema.

        Raises:
            BundleError: a column the bundle names is missing or not numeric.
            DataError: the dataset is missing or unreadable.
        """
        dataset = self.dataset(model)
        schema = read_schema(Path(dataset.path), dataset.fmt, dataset.na_values)
        problems = model_problems(self.config, model, schema)
        if problems:
            raise BundleError(problems)
        spec = self.model(model)
        features = model_features(spec, schema)
        if spec.task != "forecast":
            return self.segment_spec(model, features), dataset
        kind = time_kind_of(schema.field(str(spec.time)).type) or "date"
        freq = str(spec.freq) if spec.freq is not None else self._fleet_freq(model, dataset, kind)
        return self.segment_spec(model, features, kind, freq), dataset

    def _fleet_freq(self, model: str, dataset: Dataset, kind: str) -> str:
        """A forecast fleet's grid, inferred from the spacing of its segments' times (the bundle states none).

        Raises:
            BundleError: the spacing names no grid (the bundle must state freq).
        """
        spec = self.model(model)
        frame = read_frame(Path(dataset.path), dataset.fmt, [*spec.segment_by, str(spec.time)], dataset.na_values)
        try:
            times = parse_times(frame[str(spec.time)], kind)
            codes = frame.groupby(list(spec.segment_by), sort=False, dropna=False, observed=True).ngroup().to_numpy()
            return infer_freq(codes, times, kind)
        except GridError as exc:
            key = ("resources", "models", model, "time")
            raise BundleError(f"{self.config.where(key)}resources.models.{model}.time: {exc}") from exc

    @staticmethod
    def model_packages(spec: SegmentSpec) -> tuple[str, ...]:
        """Packages beyond manymodels' own that its models need to load where MLflow serves them (pinned in the
        model's requirements): statsforecast's models, kept in skops' format."""
        if any(c.estimator == "statsforecast" for c in spec.choices()):
            return ("statsforecast", "skops")
        return ()

    def estimator_code(self, spec: SegmentSpec) -> list[Path]:
        """The project's own module or package an estimator's import path names, to ship with the model.

        None for a library's estimator (`sklearn.linear_model:Ridge`): that is installed, not the project's.
        """
        if not spec.entry:
            return []
        top = spec.entry.partition(":")[0].split(".")[0]
        for root in spec.import_roots:
            for candidate in (Path(root) / top, Path(root) / f"{top}.py"):
                if candidate.exists():
                    return [candidate]
        return []

    def example_rows(self, model: str, columns: list[str]) -> pd.DataFrame | None:
        """The first rows of the model's dataset (`columns` only): a model's input example; None if unreadable."""
        try:
            dataset = self.dataset(model)
            return read_head(Path(dataset.path), dataset.fmt, columns, na_values=dataset.na_values)
        except (DataError, BundleError):
            return None


def source_rows(source: Any) -> int | None:
    """The rows of a job's input when known without reading them (a file's metadata, a pandas frame's length)."""
    if isinstance(source, Dataset):
        return row_count(Path(source.path), source.fmt)
    return len(source) if isinstance(source, pd.DataFrame) else None

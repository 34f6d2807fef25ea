"""Fit, serialize and load per-segment models, whatever their kind."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import json
import os
import pickle  # noqa: S403 - only for estimators with no other format, where the target says `trust: pickle`
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from manymodels.errors import BundleError
from manymodels.estimators.baseline import FORMAT_BASELINE, Baseline
from manymodels.estimators.statistical import FORMAT_STATSFORECAST, StatisticalModel, load_statistical
from manymodels.estimators.trust import PickleRefused, pickle_allowed, refusal

FORMAT_LIGHTGBM = "lightgbm-text"
FORMAT_PICKLE = "pickle"
FORMAT_SKOPS = "sklearn-skops"
# The types a scikit-learn model saved with skops may name beyond skops' own trusted ones: scikit-learn's (its trees,
# its loss objects...) and the wrapper that fills missing values. Anything else is refused when loading.
_SKOPS_MODULES = ("sklearn.",)
_SKOPS_TYPES = frozenset({"manymodels.estimators.core.Imputed"})
DEFAULT_ROUNDS = 100


class Predictor(Protocol):
    """A loaded model: features in, one score per row out."""

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predictions (regression values, or the positive class's probability) for each row."""
        ...


def resolve_entry(entry: str) -> Any:
    """The object an import path names: `pkg.module:Name` or `pkg.module.Name`.

    Raises:
        BundleError: the module cannot be imported or has no such name.
    """
    module_name, sep, attr = entry.partition(":")
    if not sep:
        module_name, _, attr = entry.rpartition(".")
    if not module_name or not attr:
        raise BundleError(f"{entry!r} is not an import path such as 'pkg.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BundleError(f"cannot import module {module_name!r} (from {entry!r}): {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BundleError(f"module {module_name!r} has no {attr!r} (from {entry!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BundleError(f"{entry!r} is not a class or function")
    return obj


def accepted_params(kind: str, entry: str | None) -> set[str] | None:
    """The parameter names an estimator takes, or None when it takes any (`**kwargs`).

    LightGBM: its own parameters and their aliases (`num_boost_round` among them), as LightGBM
    lists them. A class: its constructor's keywords (scikit-learn's `get_params()` are those). A
    function `fit(X, y, **params)`: its arguments after the first two.

    Raises:
        BundleError: `entry` cannot be imported.
    """
    if kind == "lightgbm":
        return _lightgbm_params()
    factory = resolve_entry(entry or "")
    try:
        signature = inspect.signature(factory)  # a class: its constructor's, without self
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    skip = 0 if isinstance(factory, type) else 2  # a function's first two are X, y
    return {p.name for p in parameters[skip:] if p.kind is not inspect.Parameter.VAR_POSITIONAL}


@functools.cache
def _lightgbm_params() -> set[str] | None:
    """LightGBM's parameters and their aliases, as its C API lists them (once per process).

    Kept in the user's cache folder per LightGBM version: importing LightGBM (and scikit-learn, which it imports)
    costs most of a second, and a command that only checks a bundle before its workers fit (`train` on a pool,
    `validate`) needs nothing else of it. A cache that does not read is ignored, one that cannot be written is
    not kept: the names are then asked of LightGBM again.
    """
    cached = _param_cache("lightgbm")
    if cached is not None:
        try:
            names = json.loads(cached.read_text())
            if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                return set(names)
        except (OSError, ValueError):
            pass
    import lightgbm.basic

    try:
        table = lightgbm.basic._ConfigAliases._get_all_param_aliases()
    except AttributeError:  # a LightGBM without it: do not guess
        return None
    names = {alias for name, aliases in table.items() for alias in (name, *aliases)}
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(sorted(names)))
            partial.replace(cached)  # whole or not at all: another process may read it now
        except OSError:
            pass
    return names


def _param_cache(package: str) -> Path | None:
    """Where a package's parameter names are cached (None: its version is unknown)."""
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if not re.fullmatch(r"[A-Za-z0-9.+_-]+", version):
        return None
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "manymodels" / f"{package}-{version}-params.json"


def is_constant(fmt: str, blob: bytes) -> bool:
    """Whether a fitted model predicts one value for every row: every LightGBM tree a single leaf.

    That is LightGBM finding no split (`min_data_in_leaf` above the segment's rows, or no
    feature that varies); other formats are not inspected.
    """
    if fmt != FORMAT_LIGHTGBM:
        return False
    trees = blob.count(b"\nnum_leaves=")  # counted, not parsed: a model's text runs to hundreds of kilobytes
    return trees > 0 and blob.count(b"\nnum_leaves=1\n") == trees


def fit_model(
    kind: str,
    entry: str | None,
    params: Mapping[str, Any],
    task: str,
    X: pd.DataFrame | np.ndarray,
    y: np.ndarray,
    impute: str | None = None,
    serialize: bool = True,
) -> tuple[Predictor, str, bytes]:
    """Fit one model and serialize it.

    Args:
        kind: `lightgbm`, `sklearn` or `python`.
        entry: the import path, for `sklearn` and `python`.
        params: the estimator's parameters, passed through as given.
        task: `regression` or `binary`.
        X: the training features.
        y: the training labels.
        impute: fill missing feature values (`median` of the training rows, or `zero`) for a
            sklearn or python estimator; the values are kept with the model, so prediction fills
            the same.
        serialize: False skips the bytes (b"" is returned): a cross-validation fold's model is
            scored and dropped.

    Returns:
        The fitted predictor, its format name and its bytes: a `sklearn` estimator in skops' format when skops can
        hold it with the types `load_model` trusts, else (and a `python` one) with pickle, where this process trusts
        pickle.

    Raises:
        PickleRefused: the model can only be saved with pickle, which this process does not trust.
    """
    if kind == "lightgbm":
        booster = _fit_lightgbm(params, task, X, y)
        return _LightGBMPredictor(booster), FORMAT_LIGHTGBM, booster.model_to_string().encode() if serialize else b""
    factory = resolve_entry(entry or "")
    fills = _fill_values(X, impute) if impute and isinstance(X, pd.DataFrame) else None
    if fills is not None and isinstance(X, pd.DataFrame):
        X = X.fillna(fills)  # noqa: N806
    if isinstance(factory, type):
        model = factory(**params)
        fitted = model.fit(X, y)
        model = fitted if fitted is not None else model  # fit returns self by contract; tolerate None
    else:
        model = factory(X, y, **params)
    if not hasattr(model, "predict"):
        raise TypeError(f"{entry} returned {type(model).__name__}, which has no predict method")
    if fills is not None:
        model = Imputed(model, fills)
    predictor = _ObjectPredictor(model, task)
    if not serialize:
        return predictor, FORMAT_SKOPS if kind == "sklearn" else FORMAT_PICKLE, b""
    if kind == "sklearn":
        blob, untrusted = _skops_bytes(model)
        if not untrusted:
            return predictor, FORMAT_SKOPS, blob
        if not pickle_allowed():
            raise PickleRefused(
                f"{entry} cannot be saved without pickle: skops would have to trust {', '.join(untrusted)} to load "
                "it; with `trust: pickle` on the target it is saved with pickle")
    elif not pickle_allowed():
        raise refusal()
    return predictor, FORMAT_PICKLE, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def _skops_bytes(model: Any) -> tuple[bytes, list[str]]:
    """A model in skops' format, and the types it names that `load_model` would refuse (none: it loads)."""
    import skops.io

    try:
        blob = bytes(skops.io.dumps(model))
    except (TypeError, NotImplementedError, AttributeError) as exc:  # a type skops cannot take apart
        return b"", [f"{type(model).__module__}.{type(model).__name__} ({exc})"]
    return blob, _refused_types(skops.io.get_untrusted_types(data=blob))


def _refused_types(untrusted: Sequence[str]) -> list[str]:
    return sorted(t for t in untrusted if t not in _SKOPS_TYPES and not t.startswith(_SKOPS_MODULES))


def _load_skops(blob: bytes) -> Any:
    """A scikit-learn model from skops' bytes, building only skops' own trusted types, scikit-learn's and `Imputed`.

    Raises:
        ValueError: the bytes name any other type (what manymodels never writes: a planted file).
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=blob)
    wrong = _refused_types(untrusted)
    if wrong:
        raise ValueError(f"its skops file names types it must not hold: {', '.join(wrong)}")
    return skops.io.loads(blob, trusted=list(untrusted))  # each of them allowed, as checked above


def load_model(fmt: str, blob: bytes, task: str) -> Predictor:
    """Load a model saved by `fit_model`.

    Raises:
        PickleRefused: a pickled model, in a process that does not trust pickle (nothing is unpickled).
        ValueError: the format is unknown; a skops file naming a type outside those trusted.
    """
    if fmt == FORMAT_LIGHTGBM:
        return _LightGBMPredictor(_booster_type()(model_str=blob.decode()))
    if fmt == FORMAT_SKOPS:
        return _ObjectPredictor(_load_skops(blob), task)
    if fmt == FORMAT_PICKLE:
        if not pickle_allowed():
            raise refusal()
        model = pickle.loads(blob)  # noqa: S301 - only where the target trusts pickle (trust: pickle)
        return _ObjectPredictor(model, task)
    if fmt == FORMAT_BASELINE:
        return Baseline.from_bytes(blob)
    if fmt == FORMAT_STATSFORECAST:
        return StatisticalModel(load_statistical(blob))
    raise ValueError(f"unknown model format {fmt!r}")


@functools.cache
def _booster_type() -> type:
    """LightGBM's Booster, for prediction only: it skips asking LightGBM for the model's training parameters.

    `Booster(model_str=...)` parses the model, then has LightGBM write every parameter as JSON and
    reads it back (`_get_loaded_param`, about seven times the parse itself); prediction never reads
    them. Scoring loads one model per segment, so that is most of its time at 20 rows a segment.
    Should LightGBM rename the method, the override is simply unused and loading is as before.
    """
    import lightgbm as lgb

    class PredictingBooster(lgb.Booster):
        def _get_loaded_param(self) -> dict[str, Any]:
            return {}

    return PredictingBooster


def _fit_lightgbm(params: Mapping[str, Any], task: str, X: pd.DataFrame, y: np.ndarray) -> Any:
    import lightgbm as lgb

    options = dict(params)
    rounds = int(options.pop("num_boost_round", options.pop("n_estimators", DEFAULT_ROUNDS)))
    options.setdefault("objective", "regression" if task == "regression" else "binary")
    options.setdefault("verbose", -1)
    # One thread per fit: the engine runs one fit per core, and oversubscription only slows them.
    options.setdefault("num_threads", 1)
    data = lgb.Dataset(
        lightgbm_input(X),
        label=y,
        feature_name=[str(c) for c in X.columns],
        free_raw_data=True,
        params={"verbose": options["verbose"]},
    )
    # keep_training_booster: skips a save/load round trip that lgb.train does to free the training data.
    return lgb.train(options, data, num_boost_round=rounds, keep_training_booster=True)


def has_text(X: pd.DataFrame) -> bool:
    """Whether any column holds text or categories (LightGBM's categorical features), not numbers."""
    return any(not _number_dtype(d) for d in X.dtypes)  # the dtypes at once: a Series per column costs more


def _number_dtype(dtype: Any) -> bool:
    if isinstance(dtype, np.dtype):  # numpy's: numbers and booleans by kind
        return dtype.kind in "biufc"
    return bool(pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def lightgbm_input(X: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    """What LightGBM is given: a float matrix (missing values as NaN, which LightGBM handles), or, with
    text columns, a frame whose text columns are pandas categories.

    LightGBM keeps each category column's categories in the model (its `pandas_categorical`), so
    prediction maps a category to the code training gave it, and a category training never saw
    to missing.
    """
    if not isinstance(X, pd.DataFrame) or not has_text(X):
        return _float_matrix(X)
    columns: dict[str, Any] = {}
    for name in X.columns:
        values = X[name]
        if _is_number(values):
            columns[name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(values.dtype, pd.CategoricalDtype):
            columns[name] = values
        else:
            columns[name] = values.astype("category")
    return pd.DataFrame(columns, index=X.index)


def _is_number(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


class _LightGBMPredictor:
    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(lightgbm_input(X), num_threads=1), dtype=float)

    def fitted_values(self) -> np.ndarray | None:
        """Its predictions on the rows it was fitted on, in their order, without a prediction pass: the training
        scores LightGBM kept while boosting (equal to `predict` on those rows for its built-in objectives: tested).
        None for a model loaded from its bytes, which holds no training rows."""
        kept: list[np.ndarray] = []

        def keep(predictions: np.ndarray, _data: Any) -> tuple[str, float, bool]:
            kept.append(np.asarray(predictions, dtype=float).copy())
            return "kept", 0.0, False

        try:
            self.booster.eval_train(keep)
        except Exception:  # noqa: BLE001 - no training data (a loaded model): the caller predicts instead
            return None
        return kept[0] if kept else None


def _fill_values(X: pd.DataFrame, how: str) -> dict[str, float]:
    """Per feature: the value that stands for a missing one (the training median, or 0; 0 for an all-missing column)."""
    if how == "zero":
        return dict.fromkeys(X.columns, 0.0)
    medians = X.median(numeric_only=True)
    return {str(c): float(v) if v == v else 0.0 for c, v in medians.items()}


class Imputed:
    """A model whose missing feature values are filled with the values its training used (pickled with it)."""

    def __init__(self, model: Any, fills: dict[str, float]) -> None:
        self.model, self.fills = model, fills

    def predict(self, X: pd.DataFrame) -> Any:
        """The model's predictions with missing values filled."""
        return self.model.predict(X.fillna(self.fills))

    def __getattr__(self, name: str) -> Any:
        """Anything else the model answers (coef_, classes_, ...); `predict_proba`, when it has one, filled too."""
        if name in ("model", "fills"):  # not set yet (while unpickling): no recursion
            raise AttributeError(name)
        found = getattr(self.model, name)
        if name == "predict_proba":
            return lambda X: found(X.fillna(self.fills))
        return found


class _ObjectPredictor:
    def __init__(self, model: Any, task: str) -> None:
        self.model = model
        self.task = task

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.task == "binary" and hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(X))
            return proba[:, 1] if proba.ndim == 2 else proba
        return np.asarray(self.model.predict(X), dtype=float).reshape(-1)


def _float_matrix(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    if isinstance(X, pd.DataFrame):  # nullable columns (Int64, Float64) hold pd.NA: NaN here
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(X, dtype=np.float64)


def add_import_roots(roots: Sequence[str]) -> None:
    """Make a project's own modules importable (its folder and src/), in this process."""
    for root in reversed(roots):
        if root not in sys.path:
            sys.path.insert(0, root)

"""Statistical forecast models from statsforecast (ETS, ARIMA, Theta, Croston...), fitted per segment.

statsforecast is an optional dependency (`pip install 'manymodels[forecast]'`): nothing here imports it until a
bundle names a `type: statsforecast` candidate. A fitted model is kept in skops' format (no pickle): loading it
builds only the model's own class and statsforecast's result records, and refuses a file that names any other type.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from manymodels.errors import BundleError

FORMAT_STATSFORECAST = "statsforecast-skops"
EXTRA = "pip install 'manymodels[forecast]'"
# What a saved statsforecast model may hold besides its own class (ETS, Theta, CES keep their fit as these).
_RECORDS = ("statsforecast.utils.results",)


class MissingExtra(BundleError):
    """statsforecast is not installed."""


def _models() -> Any:
    try:
        return importlib.import_module("statsforecast.models")
    except ImportError as exc:
        raise MissingExtra(f"type statsforecast needs statsforecast, which is not installed: {EXTRA}") from exc


def model_names() -> list[str]:
    """The model classes statsforecast offers (what `model:` may name).

    Raises:
        BundleError: statsforecast is not installed.
    """
    models, base = _models(), _base_class()
    return sorted(n for n, v in vars(models).items()
                  if inspect.isclass(v) and issubclass(v, base) and v is not base and not n.startswith("_"))


def _base_class() -> type:
    base: type = _models()._TS
    return base


def model_class(name: str) -> type:
    """The statsforecast model class `name`.

    Raises:
        BundleError: statsforecast is not installed, or has no such model.
    """
    models = _models()
    found = getattr(models, name, None)
    if not (inspect.isclass(found) and issubclass(found, _base_class())) or name.startswith("_"):
        raise BundleError(f"statsforecast has no model {name!r}")
    return found


def model_params(name: str) -> set[str]:
    """The keyword arguments a statsforecast model's constructor takes (`alias` left out: the candidate's name is).

    Raises:
        BundleError: statsforecast is not installed, or has no such model.
    """
    signature = inspect.signature(model_class(name))
    return {p for p in signature.parameters if p not in ("self", "alias")}


def uses_exog(name: str) -> bool:
    """Whether the model reads exogenous regressors (`known` features): AutoARIMA, ARIMA and a few others."""
    return _reads_exog(model_class(name))


def fit_statistical(name: str, params: dict[str, Any], y: np.ndarray, X: np.ndarray | None = None) -> Any:  # noqa: N803
    """A statsforecast model fitted on one series' values (finite, oldest first), and its exogenous regressors `X`
    (one row per value) where the model reads them."""
    model = model_class(name)(**params)
    model.fit(_array(y), _array(X) if X is not None and X.shape[1] and _reads_exog(model) else None)
    return model


def forecast_statistical(model: Any, y: np.ndarray, steps: int, X: np.ndarray | None = None,  # noqa: N803
                         X_future: np.ndarray | None = None) -> np.ndarray:  # noqa: N803
    """`steps` forecasts from the end of `y` by a fitted model: its fitted parameters applied to `y` (statsforecast's
    `forward`), or, for models that keep no parameters to apply (Croston, ADIDA...), fitted again on `y`. `X`, the
    regressors of `y`'s steps, and `X_future`, of the steps ahead, are read where the model reads them."""
    return np.asarray(_forward(model, y, steps, X, X_future)["mean"], dtype=np.float64)


def interval_widths(model: Any, y: np.ndarray, steps: int, levels: Sequence[float], X: np.ndarray | None = None,  # noqa: N803
                    X_future: np.ndarray | None = None) -> np.ndarray:  # noqa: N803
    """The model's own prediction intervals around `forecast_statistical`'s forecasts, as half-widths (levels x
    steps: half the distance between statsforecast's `lo-L` and `hi-L`); NaN for a model that gives none (Croston,
    ADIDA: statsforecast computes theirs only by conformal cross-validation, which `prediction_intervals` asks
    for at construction)."""
    out = np.full((len(levels), steps), np.nan)
    try:
        found = _forward(model, y, steps, X, X_future, [int(v) if float(v).is_integer() else v for v in levels])
    except Exception:  # noqa: BLE001 - statsforecast raises differently per model that has no intervals
        return out
    for i, level in enumerate(levels):
        low, high = found.get(f"lo-{level:g}"), found.get(f"hi-{level:g}")
        if low is not None and high is not None:
            out[i] = (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / 2
    return out


def _forward(model: Any, y: np.ndarray, steps: int, X: np.ndarray | None, X_future: np.ndarray | None,  # noqa: N803
             level: list[Any] | None = None) -> dict[str, Any]:
    exog = _exog(model, X, X_future)
    extra = {"level": level} if level else {}
    if hasattr(model, "forward"):
        return dict(model.forward(y=_array(y), h=steps, **exog, **extra))
    return dict(type(model)(**_constructor_args(model)).forecast(y=_array(y), h=steps, **exog, **extra))


def window_forecast(name: str, params: dict[str, Any], y: np.ndarray, steps: int, X: np.ndarray | None = None,  # noqa: N803
                    X_future: np.ndarray | None = None) -> np.ndarray:  # noqa: N803
    """A model fitted on `y` and forecasting `steps` from its end, in one call (a validation window's: nothing kept)."""
    model = model_class(name)(**params)
    out = model.forecast(y=_array(y), h=steps, **_exog(model, X, X_future))
    return np.asarray(out["mean"], dtype=np.float64)


def _reads_exog(model: Any) -> bool:
    return bool(getattr(model, "uses_exog", False))


def _exog(model: Any, X: np.ndarray | None, X_future: np.ndarray | None) -> dict[str, Any]:  # noqa: N803
    """The regressors' keyword arguments for a model that reads them (none otherwise, or without regressors)."""
    if not _reads_exog(model) or X is None or X_future is None or X.shape[1] == 0:
        return {}
    return {"X": _array(X), "X_future": _array(X_future)}


def _array(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _constructor_args(model: Any) -> dict[str, Any]:
    names = inspect.signature(type(model)).parameters
    return {n: getattr(model, n) for n in names if hasattr(model, n) and n != "prediction_intervals"}


def dump_statistical(model: Any) -> bytes:
    """A fitted model's bytes, in skops' format.

    Raises:
        ValueError: the model holds something skops cannot keep safely (e.g. MSTL's frame).
    """
    import skops.io

    try:
        return bytes(skops.io.dumps(model))
    except (TypeError, NotImplementedError) as exc:
        raise ValueError(f"statsforecast model {type(model).__name__} cannot be saved without pickle: {exc}") from exc


def load_statistical(blob: bytes) -> Any:
    """Read back what `dump_statistical` wrote, building only a statsforecast model class and its result records.

    Raises:
        ValueError: the bytes name any other type (a file that is not what manymodels wrote).
    """
    try:
        import skops.io
    except ImportError as exc:
        raise ValueError(f"a statsforecast model needs skops and statsforecast to load: {EXTRA}") from exc
    untrusted = skops.io.get_untrusted_types(data=blob)
    prefix = "statsforecast.models."
    allowed = set(_RECORDS) | {t for t in untrusted if t.startswith(prefix) and "." not in t[len(prefix):]}
    models = {t for t in untrusted if t.startswith(prefix)}
    wrong = sorted(set(untrusted) - allowed)
    if wrong or len(models) > 1:
        raise ValueError(f"a statsforecast model's file names types it must not hold: {', '.join(wrong or models)}")
    for name in models:  # the one class it names is a statsforecast model
        try:
            model_class(name[len(prefix):])
        except BundleError as exc:
            raise ValueError(str(exc)) from exc
    return skops.io.loads(blob, trusted=sorted(untrusted))  # each of them allowed, as checked above


class StatisticalModel:
    """A fitted statsforecast model where a forecaster keeps its models: it forecasts from a series, not rows."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803 - the Predictor protocol's name
        """Not for rows of features: a statistical model forecasts from a series' values (`forecast`).

        Raises:
            TypeError: always.
        """
        raise TypeError(f"{type(self.model).__name__} forecasts from a series' values, not from rows of features")

    @property
    def reads_exog(self) -> bool:
        """Whether the model reads exogenous regressors (the forecast's `known` features)."""
        return _reads_exog(self.model)

    def forecast(self, y: np.ndarray, steps: int, X: np.ndarray | None = None,  # noqa: N803
                 X_future: np.ndarray | None = None) -> np.ndarray:  # noqa: N803
        """`steps` forecasts from the end of `y` (see `forecast_statistical`)."""
        return forecast_statistical(self.model, y, steps, X, X_future)

    def widths(self, y: np.ndarray, steps: int, levels: Sequence[float], X: np.ndarray | None = None,  # noqa: N803
               X_future: np.ndarray | None = None) -> np.ndarray:  # noqa: N803
        """Its own prediction intervals' half-widths around `forecast` (see `interval_widths`)."""
        return interval_widths(self.model, y, steps, levels, X, X_future)

"""The estimators layer: fit one segment's model, save it in its native format, load it back.

Kinds: `lightgbm` (the default; saved as LightGBM model text), `sklearn` (any estimator class by
import path) and `python` (a user's own class or function by import path). scikit-learn models are saved in
skops' format (loading builds only the types it trusts); `python` ones with pickle, as nothing else exists for
arbitrary Python objects, and only where the target trusts pickle (`trust`); `statsforecast` (forecasts: ETS,
ARIMA, Theta... by class name, the optional `forecast` extra) saved in skops' format. Baselines (`mean`,
`median`, `last`, `seasonal`) are what model selection compares the others with; saved as JSON.
"""

from manymodels.estimators.baseline import FORMAT_BASELINE, Baseline, fit_baseline, time_values
from manymodels.estimators.core import (
    FORMAT_LIGHTGBM,
    FORMAT_PICKLE,
    FORMAT_SKOPS,
    Predictor,
    accepted_params,
    add_import_roots,
    fit_model,
    has_text,
    is_constant,
    load_model,
    resolve_entry,
)
from manymodels.estimators.statistical import (
    FORMAT_STATSFORECAST,
    MissingExtra,
    StatisticalModel,
    dump_statistical,
    fit_statistical,
    model_names,
    model_params,
    uses_exog,
    window_forecast,
)
from manymodels.estimators.trust import PickleRefused, allow_pickle, pickle_allowed

__all__ = [
    "FORMAT_BASELINE",
    "Baseline",
    "fit_baseline",
    "time_values",
    "FORMAT_LIGHTGBM",
    "FORMAT_SKOPS",
    "PickleRefused",
    "allow_pickle",
    "pickle_allowed",
    "FORMAT_PICKLE",
    "Predictor",
    "accepted_params",
    "add_import_roots",
    "fit_model",
    "has_text",
    "is_constant",
    "load_model",
    "resolve_entry",
    "FORMAT_STATSFORECAST",
    "MissingExtra",
    "StatisticalModel",
    "dump_statistical",
    "fit_statistical",
    "model_names",
    "model_params",
    "uses_exog",
    "window_forecast",
]

"""The bundle's model-selection sections: `validation`, `candidates`, `tuning`, `selection`."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from manymodels.bundle.strict import Strict

BASELINE_METHODS = ("mean", "median", "last", "seasonal")


class ValidationSpec(Strict):
    """`validation:` how each segment's training rows are cross-validated to choose its model.

    `kfold` (default): `folds` shuffled folds, `seed`ed. `time`: a rolling-origin backtest on the
    column `by` (default: `split.by`): `windows` windows, the latest testing on the segment's last
    `horizon` distinct times, each earlier one `step` times sooner; a window trains only on rows
    before its first test time. The holdout (`split`) is never part of it.
    """

    kind: Literal["kfold", "time"] = "kfold"
    folds: int = Field(default=5, ge=2)
    seed: int = 42
    by: str | None = Field(default=None, min_length=1)
    windows: int = Field(default=3, ge=1)
    horizon: int = Field(default=1, ge=1)
    step: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ValidationSpec:
        given = self.model_fields_set
        if self.kind == "kfold":
            wrong = sorted(given & {"by", "windows", "horizon", "step"})
            if wrong:
                raise ValueError(f"{', '.join(wrong)} are for kind time; kfold takes folds and seed")
        elif "folds" in given:
            raise ValueError("folds is for kind kfold; kind time takes windows, horizon and step")
        return self

    @property
    def window_step(self) -> int:
        """How far each earlier window moves back: `step`, else `horizon` (windows that do not overlap)."""
        return self.step or self.horizon


class CandidateSpec(Strict):
    """One entry of `candidates:`: a model kind every segment tries.

    `type` lightgbm, sklearn or python take `params` (and `entry`, as `estimator:` does);
    `baseline` takes a `method`: `mean`, `median`, `last` (the latest training row's label) or
    `seasonal` (the label `period` steps earlier on the segment's time grid).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["lightgbm", "sklearn", "python", "baseline"] = "lightgbm"
    entry: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    method: Literal["mean", "median", "last", "seasonal"] | None = None
    period: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _fields_of_type(self) -> CandidateSpec:
        if self.type == "baseline":
            if self.method is None:
                raise ValueError(f"a baseline needs method: one of {', '.join(BASELINE_METHODS)}")
            if self.entry is not None or self.params:
                raise ValueError("a baseline takes method (and period), not entry or params")
            if self.method == "seasonal" and self.period is None:
                raise ValueError("baseline seasonal needs period: the season's length in time steps (e.g. 52)")
        elif self.method is not None:
            raise ValueError("method is for type baseline")
        if self.period is not None and self.method != "seasonal":
            raise ValueError("period is for baseline seasonal")
        if self.type == "lightgbm" and self.entry is not None:
            raise ValueError("entry is only for type sklearn or python; lightgbm needs none")
        if self.type in ("sklearn", "python") and not self.entry:
            raise ValueError(f"type {self.type} needs entry, an import path such as 'pkg.module:Name'")
        return self


def _dimension(name: str, value: Any) -> dict[str, Any]:
    """One tuning dimension, normalised: {"choices": [...]} or {"int"|"float": [low, high], "log": bool}."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{name}: an empty list of choices")
        if any(isinstance(v, (dict, list)) for v in value):
            raise ValueError(f"{name}: choices must be plain values (numbers, text, true/false)")
        return {"choices": list(value)}
    if not isinstance(value, dict):
        raise ValueError(
            f"{name}: give a list of choices ([2, 5, 20]), {{int: [low, high]}} or {{float: [low, high], log: true}}; "
            f"got {value!r}"
        )
    kinds = [k for k in ("int", "float") if k in value]
    unknown = sorted(set(value) - {"int", "float", "log"})
    if len(kinds) != 1 or unknown:
        raise ValueError(f"{name}: a range is {{int: [low, high]}} or {{float: [low, high]}} (plus log: true); "
                         f"got keys {', '.join(map(str, value))}")
    kind = kinds[0]
    bounds = value[kind]
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list) or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        raise ValueError(f"{name}: {kind} takes [low, high], two {'integers' if kind == 'int' else 'numbers'}; "
                         f"got {bounds!r}")
    low, high = bounds
    if not low < high or (kind == "float" and not (math.isfinite(low) and math.isfinite(high))):
        raise ValueError(f"{name}: low {low} must be below high {high}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{name}: log is true or false")
    if log and low <= 0:
        raise ValueError(f"{name}: a log range needs low above 0; got {low}")
    return {kind: [low, high], "log": log}


class TuningSpec(Strict):
    """`tuning.<candidate>:` its parameters searched per segment (Optuna, in memory, seeded).

    `space`: parameter -> a list of choices, `{int: [low, high]}` or `{float: [low, high], log:
    true}`. `trials` parameter sets are tried (each cross-validated); `sampler` tpe (default),
    random, or grid (lists only; at most `trials` of the grid's points), seeded with
    `validation.seed`. `scope: segment` (the only one built yet) tunes each segment on its own.
    """

    space: dict[str, Any] = Field(min_length=1)
    trials: int = Field(default=20, ge=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    scope: Literal["segment", "global"] = "segment"

    @field_validator("space")
    @classmethod
    def _dimensions(cls, value: dict[str, Any]) -> dict[str, Any]:
        out, wrong = {}, []
        for name, dim in value.items():
            try:
                out[str(name)] = _dimension(str(name), dim)
            except ValueError as exc:
                wrong.append(str(exc))
        if wrong:
            raise ValueError("; ".join(wrong))
        return out

    @field_validator("scope")
    @classmethod
    def _scope_built(cls, value: str) -> str:
        if value == "global":
            raise ValueError("scope global (tune once on a sample of segments) is not built yet: use scope segment")
        return value

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> TuningSpec:
        if self.sampler == "grid":
            ranges = [n for n, d in self.space.items() if "choices" not in d]
            if ranges:
                raise ValueError(f"sampler grid takes lists of choices; {', '.join(ranges)} is a range")
        return self


class SelectionSpec(Strict):
    """`selection:` how the winner is picked: the best mean cross-validated `metric` (default: the model's)."""

    metric: str | None = None
    rule: Literal["best"] = "best"

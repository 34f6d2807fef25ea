"""The bundle's job tasks: what each kind of task takes (`resources.jobs.<name>.tasks`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from manymodels.bundle.strict import Strict


class ScoreTaskSpec(Strict):
    """`score:` in a job task: predictions for a dataset, written as Parquet."""

    model: str
    dataset: str
    output: str
    run: str | None = None


class EvaluateTaskSpec(Strict):
    """`evaluate:` in a job task: the model's challenger against its champion, per segment.

    `data` names a dataset to evaluate both on (default: the holdout rows of the model's dataset).
    The task fails when the promotion policy's gate fails, which skips the tasks depending on it.
    """

    model: str
    data: str | None = None


class PromoteTaskSpec(Strict):
    """`promote:` in a job task: a new champion version, the challenger where it won.

    `force`: promote the winners even when the evaluation's gate failed.
    """

    model: str
    all: bool = False
    force: bool = False


class ForecastTaskSpec(Strict):
    """`forecast:` in a job task: the next steps of every segment of a forecast model, written to `output`.

    `known`: the dataset of the known features' future values; `data`: a dataset of newer history to start from
    (default: the history the pack keeps); `horizon`: fewer steps than trained.
    """

    model: str
    output: str
    known: str | None = None
    data: str | None = None
    horizon: int | None = Field(default=None, ge=1)


class MonitorTaskSpec(Strict):
    """`monitor:` in a job task: drift and performance of the serving models on new rows.

    `data`: the dataset of new rows (with `prediction` when it is a scored output; with the label,
    performance too). `version`: the registered version to monitor (default: the champion).
    `output`: also write the per-segment table there. The task fails when the fleet breaches the
    model's `monitoring` thresholds, which skips the tasks depending on it.
    """

    model: str
    data: str
    version: int | None = None
    output: str | None = None


_KINDS = ("train", "evaluate", "promote", "score", "forecast", "monitor", "python")


class TaskSpec(Strict):
    """One task of a job: exactly one of `train`, `evaluate`, `promote`, `score`, `forecast`, `monitor` or `python`,
    plus its dependencies.

    A train task with `changed_only: true` fits only the segments that changed since the champion.
    A python task calls a function by import path (`my_pkg.features:build`, importable from the
    bundle's folder and its `src/`) with `parameters` as keyword arguments: a feature step, say.

    `evaluate` and `promote` take the model's name alone or a mapping (`{model: demand, data: fresh}`).
    """

    key: str = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    train: str | None = None
    changed_only: bool = False
    evaluate: EvaluateTaskSpec | None = None
    promote: PromoteTaskSpec | None = None
    score: ScoreTaskSpec | None = None
    forecast: ForecastTaskSpec | None = None
    monitor: MonitorTaskSpec | None = None
    python: str | None = Field(default=None, min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("evaluate", "promote", mode="before")
    @classmethod
    def _model_name_alone(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TaskSpec:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(kinds) or "none"
            raise ValueError(f"a task needs exactly one of {', '.join(_KINDS)}; got {got}")
        if self.changed_only and self.train is None:
            raise ValueError("changed_only is for train tasks")
        if self.parameters and self.python is None:
            raise ValueError("parameters are for python tasks")
        return self

    @property
    def kind(self) -> str:
        """`train`, `evaluate`, `promote`, `score`, `forecast`, `monitor` or `python`."""
        return next(k for k in _KINDS if getattr(self, k) is not None)

    @property
    def model(self) -> str | None:
        """The model family the task works on (None for a python task)."""
        if self.train is not None:
            return self.train
        spec = self.evaluate or self.promote or self.score or self.forecast or self.monitor
        return spec.model if spec is not None else None

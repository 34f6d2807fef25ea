"""The bundle's settings around its resources, typed: the bundle's name and git rules, variables, a target's tracking
and engine."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from manymodels.bundle.strict import Strict


class GitSpec(Strict):
    """`bundle.git:` what a production deployment must come from."""

    branch: str | None = None


class BundleInfo(Strict):
    """`bundle:` the project's identity; `git.branch` is the only branch `mode: production` deploys from."""

    name: str = Field(min_length=1)
    description: str | None = None
    git: GitSpec = Field(default_factory=GitSpec)


class VariableSpec(Strict):
    """`variables.<name>:` a value the bundle refers to as `${var.<name>}`."""

    default: str | int | float | bool | None = None
    description: str | None = None


class TrackingSpec(Strict):
    """`targets.<name>.tracking:` how long to wait for the tracking server (MLflow's HTTP client retries for minutes
    by default). An unreachable server is found before any work, in seconds, whatever these say."""

    timeout_s: float = Field(default=15.0, gt=0, le=600)  # per request: connecting, and each wait for an answer
    retries: int = Field(default=5, ge=0, le=20)  # backing off 0, 2, 4, 8, 16 s: rides out a ~30 s restart


class SigningKeySpec(Strict):
    """`targets.<name>.signing_key:` where the key that signs model packs (and checks them before any is loaded) is
    read: an environment variable (`env`) or a file (`file`, its bytes less a trailing newline). Never the key itself:
    a bundle lives in git."""

    env: str | None = Field(default=None, min_length=1)
    file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> SigningKeySpec:
        if (self.env is None) == (self.file is None):
            raise ValueError("name one of env (an environment variable) or file (a path) holding the key")
        return self


class EngineSpec(Strict):
    """`engine:` where segments are fitted.

    `local` (default): a process pool of `workers` (default: the cores). `spark`: a Spark
    session, classic (`master`: `local[2]`, `spark://host:7077`, `yarn`) or Spark Connect
    (`remote`: `sc://host:15002`), with extra Spark `conf`; there `workers` is the task slots
    chunks are planned for (default: the cluster's default parallelism), and `staging` a folder
    or fsspec URL (`s3://bucket/tmp`) where executors write model shards when the run's artifact
    store is not a local path (a cluster's executors cannot write to the driver's disk).
    """

    kind: Literal["local", "spark"] = "local"
    workers: int | None = Field(default=None, ge=1)
    master: str | None = None
    remote: str | None = None
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    max_chunk_rows: int | None = Field(default=None, ge=1)
    max_segment_rows: int = Field(default=1_000_000, ge=1)
    staging: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _spark_options_need_spark(self) -> EngineSpec:
        if self.kind != "spark" and (self.master or self.remote or self.conf or self.staging):
            raise ValueError("master, remote, conf and staging are for kind spark")
        if self.master and self.remote:
            raise ValueError("give master (classic Spark) or remote (Spark Connect), not both")
        return self

    def spark_options(self) -> dict[str, Any]:
        """Keyword arguments of the Spark engine."""
        return {
            "master": self.master,
            "remote": self.remote,
            "conf": dict(self.conf),
            "max_chunk_rows": self.max_chunk_rows,
        }

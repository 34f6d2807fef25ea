"""The base of every bundle section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every bundle section: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""How every process logs (:mod:`orders_api.logging_setup`): JSON lines or plain text, and the level."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from orders_api.settings.base import SettingsBase


class LoggingSettings(SettingsBase):
    """Read by every process, the feed simulator's included."""

    log_format: Literal["json", "text"] = Field(
        "json", description="`json` (one object per line, for collectors) or `text` (for a human)."
    )
    log_level: str = Field("INFO", description="The root logger's level, by name (`DEBUG`, `INFO`, ...).")

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            known = ", ".join(logging.getLevelNamesMapping())
            raise PydanticCustomError("log_level", "not a logging level; one of {known}", {"known": known})
        return level

"""The base of every config section, and how a config value may be shown in output and errors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


SECRET_KEYS = ("password", "token", "secret", "pin")


def masked_url(url: str | None) -> str:
    """``url`` with its password (``redis://user:PW@host``) replaced by ``***``: what output may show."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url) if url else str(url)


def shown_value(path: str, value: Any) -> Any:
    """A bad value as an error message may show it: secrets masked, passwords in URLs masked."""
    if any(k in path.rsplit(".", 1)[-1].lower() for k in SECRET_KEYS) and value is not None:
        return "***"
    if isinstance(value, dict):  # a section's own check shows the section: mask the secrets inside it
        return {k: shown_value(f"{path}.{k}", v) for k, v in value.items()}
    return masked_url(value) if isinstance(value, str) else value

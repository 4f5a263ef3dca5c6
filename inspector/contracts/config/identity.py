"""Who may act: command-line users and tokens, GUI role PINs."""

from __future__ import annotations

from pydantic import Field, field_validator

from inspector.contracts.config.base import Section
from inspector.contracts.lifecycle import Role

SECRET_HASH_RE = r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{64}$"


class RoleSection(Section):
    pin_hash: str | None = Field(
        None,
        pattern=SECRET_HASH_RE,
        description="Salted scrypt hash of the role's PIN (`inspector identity hash-pin`; unset: the role has no PIN).",
    )
    pin_sha256: str | None = Field(
        None, description="Refused: unsalted sha256 PIN hashes are searched in under a second; use pin_hash."
    )

    @field_validator("pin_sha256")
    @classmethod
    def _no_unsalted_pin(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "an unsalted sha256 PIN hash is refused (a 6-digit PIN is found from it in under a "
                "second): set pin_hash to the output of `inspector identity hash-pin`"
            )
        return value


class TokenEntry(Section):
    roles: list[Role] = Field(min_length=1, description="Roles the token's holder may act in.")
    hash: str = Field(
        pattern=SECRET_HASH_RE,
        description="Salted scrypt hash of the token's secret (`inspector identity new-token NAME`).",
    )


class IdentitySection(Section):
    """Who may act from the command line: the operating-system user (or a personal token) and its roles."""

    users: dict[str, list[Role]] = Field(
        default_factory=dict,
        description="Operating-system user name -> roles. Empty: the user owning station.data_dir (who commissioned "
        "the station) holds maintenance and quality, and nobody else holds a role.",
    )
    tokens: dict[str, TokenEntry] = Field(
        default_factory=dict,
        description="Personal tokens for remote use (INSPECTOR_TOKEN=name:secret or "
        "INSPECTOR_TOKEN_FILE): name -> roles and salted hash.",
    )
    lockout_failures: int = Field(5, ge=1, le=100, description="Wrong PINs (per role) before the login locks.")
    lockout_s: float = Field(300.0, gt=0, le=86_400, description="How long a locked login stays locked.")


class GuiSection(Section):
    operator: RoleSection = Field(default_factory=RoleSection)
    quality: RoleSection = Field(default_factory=RoleSection)
    maintenance: RoleSection = Field(default_factory=RoleSection)
    defect_classes: list[str] = Field(
        default_factory=list,
        max_length=9,
        description="Defect classes on labelling keys 1..9, in order (empty: the model's classes from the review items).",
    )
    camera_source: bool = Field(False, description="The GUI streams the configured camera to the frames stream.")

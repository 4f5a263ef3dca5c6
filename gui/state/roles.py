"""Who is at the station: roles, what each may see and do, login with a PIN (no Qt)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inspector.contracts.config import GuiSection, IdentitySection
from inspector.contracts.lifecycle import Action, may


class Role(StrEnum):
    OPERATOR = "operator"
    QUALITY = "quality"
    MAINTENANCE = "maintenance"


ROLE_TITLES = {Role.OPERATOR: "Operator", Role.QUALITY: "Quality engineer", Role.MAINTENANCE: "Maintenance"}

VIEWS: dict[Role, frozenset[str]] = {
    Role.OPERATOR: frozenset({"view.operator"}),
    Role.QUALITY: frozenset({"view.operator", "view.quality"}),
    Role.MAINTENANCE: frozenset({"view.operator", "view.maintenance"}),
}
# the GUI's names for the actions of the one table, inspector.contracts.lifecycle.PERMISSIONS (the CLI's too)
GUI_ACTIONS: dict[str, Action] = {
    "verdict.dispute": Action.DISPUTE,
    "label": Action.LABEL,
    "relabel": Action.RELABEL,
    "camera.changed": Action.MAINTENANCE,
    "retrain": Action.RETRAIN,
    "model.approve": Action.APPROVE,
    "model.promote": Action.PROMOTE,
    "model.rollback": Action.ROLLBACK,
    "product.switch": Action.CHANGEOVER,
    "model.shadow": Action.SHADOW,
}
# what each role may do (a role also sees the views listed for it)
PERMISSIONS: dict[Role, frozenset[str]] = {
    role: VIEWS[role] | {name for name, action in GUI_ACTIONS.items() if may(role.value, action)} for role in Role
}


def pin_hash(pin: str) -> str:
    """The salted scrypt hash to put in ``gui.<role>.pin_hash``."""
    from inspector.identity import hash_secret

    return hash_secret(pin)


class LoginError(Exception):
    pass


@dataclass(frozen=True)
class UserSession:
    """Who is at the station, in which role. Every action is stamped with :attr:`actor`."""

    name: str
    role: Role
    started_at: float = field(default_factory=time.time)

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.role.value})"

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise PermissionError(f"{ROLE_TITLES[self.role]} may not {permission}")


class RolePolicy:
    """Checks a person's PIN for a role against the salted scrypt hash in ``gui.<role>.pin_hash``; after
    ``identity.lockout_failures`` wrong PINs the role's login is locked (counted and audited in ``store``)."""

    def __init__(self, gui: GuiSection, identity: IdentitySection | None = None, store: Any = None) -> None:
        from inspector.identity import PinLockout

        self.gui = gui
        self.lockout = PinLockout(identity or IdentitySection(), store)

    def needs_pin(self, role: Role) -> bool:
        return getattr(self.gui, role.value).pin_hash is not None

    def login(self, name: str, role: Role | str, pin: str = "") -> UserSession:
        role = Role(role)
        name = name.strip()
        if not name:
            raise LoginError("enter your name: every action is signed with it")
        expected = getattr(self.gui, role.value).pin_hash
        if expected is None:
            return UserSession(name, role)
        from inspector.identity import LockedOut, check_secret

        target = f"gui:{role.value}"
        try:
            self.lockout.check(target)
        except LockedOut as err:
            raise LoginError(err.message) from None
        if not check_secret(pin, expected):
            self.lockout.failed(target, name)
            raise LoginError(f"wrong PIN for {ROLE_TITLES[role]}")
        self.lockout.succeeded(target, name)
        return UserSession(name, role)

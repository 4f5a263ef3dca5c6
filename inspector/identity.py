"""Who runs a command, in which role, and whether that role may do it; PIN and token hashes; login lock-out.

* **Identity.** The operating-system user of the process (``pwd`` of the effective uid: ``$USER`` cannot fake
  it), or, for remote use, a personal token (``INSPECTOR_TOKEN=name:secret``, or ``INSPECTOR_TOKEN_FILE``
  naming an owner-only file with that line) whose salted hash is in ``identity.tokens``.
* **Roles.** ``identity.users`` maps OS users to roles. Unset, the user owning ``station.data_dir`` (who
  commissioned the station; whoever creates it when it does not exist yet) holds maintenance and quality, and
  nobody else holds a role: the demo and a one-person station work without configuration, a second account
  on the machine does not.
* **Authorisation.** :func:`authorize` checks an :class:`~inspector.contracts.lifecycle.Action` against the one
  ``PERMISSIONS`` table the GUI uses too. A claimed ``--role`` (or ``INSPECTOR_ROLE``) must be one the identity
  holds; an ``--actor`` / ``--user`` name must be the identity. Every refusal is an ``auth.refused`` audit row.
* **Secrets.** PINs and token secrets are stored as ``scrypt$n$r$p$salt$hash`` (``hashlib.scrypt``, 16-byte
  random salt, n=2**14, r=8: about 30 ms a guess on one core instead of nanoseconds). :class:`PinLockout`
  locks a role's login after ``identity.lockout_failures`` wrong PINs within ``identity.lockout_s``, counted
  in the audit trail (so across GUI instances and restarts), each failure and the lock-out audited.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from inspector.contracts.config import IdentitySection, StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action, Role, may

if TYPE_CHECKING:
    from inspector.store.db import Store

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ADMIN_ROLES = frozenset({Role.MAINTENANCE, Role.QUALITY})
ROLE_ORDER = (Role.OPERATOR, Role.QUALITY, Role.MAINTENANCE)
TOKEN_ENV, TOKEN_FILE_ENV = "INSPECTOR_TOKEN", "INSPECTOR_TOKEN_FILE"


class IdentityRefused(InspectorError):
    """The person running this may not do it (unknown, wrong role, or a name that is not theirs)."""

    exit_code = 2


# ------------------------------------------------------------------------------------------ secrets
def hash_secret(secret: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt$hash`` with a fresh random salt: two equal secrets never hash alike."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


# ------------------------------------------------------------------------------------------ identity
@dataclass(frozen=True)
class Identity:
    name: str
    roles: frozenset[Role]
    source: str  # "os user" or "token"

    def holds(self) -> str:
        return ", ".join(r.value for r in ROLE_ORDER if r in self.roles) or "no role"


def os_user() -> str:
    """The effective user's name from the password database (not ``$USER``, which anyone can set)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return f"uid{os.geteuid()}"


def commissioner(data_dir: Path) -> str:
    """The owner of the data folder (or of the nearest existing folder above it: who will create it)."""
    path = Path(data_dir).resolve()
    if not path.exists():
        return os_user()
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except KeyError:
        return f"uid{path.stat().st_uid}"


def _roles_of(section: IdentitySection, name: str, data_dir: Path) -> frozenset[Role]:
    if section.users:
        return frozenset(section.users.get(name, []))
    return ADMIN_ROLES if name == commissioner(data_dir) else frozenset()


def _token(environ: Mapping[str, str]) -> str | None:
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    path = environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    from inspector.store.audit import AuditKeyError, read_secret

    try:
        return read_secret(Path(path))
    except (AuditKeyError, OSError) as err:
        raise IdentityRefused(
            f"token file {path}: {getattr(err, 'message', err)}", f"keep it owner-only: chmod 600 {path}"
        ) from None


def current_identity(cfg: StationConfig, environ: Mapping[str, str] | None = None) -> Identity:
    """Who runs this process: a valid personal token if one is given, else the operating-system user."""
    environ = os.environ if environ is None else environ
    token = _token(environ)
    if token is not None:
        name, _, secret = token.partition(":")
        entry = cfg.identity.tokens.get(name)
        if entry is None or not secret or not check_secret(secret, entry.hash):
            raise IdentityRefused(
                f"the personal token {name!r} is not valid for station {cfg.station.id}",
                "ask the station's maintenance for a token (inspector identity new-token), or "
                f"unset {TOKEN_ENV} / {TOKEN_FILE_ENV} to act as your operating-system user",
            )
        return Identity(f"token:{name}", frozenset(entry.roles), "token")
    name = os_user()
    return Identity(name, _roles_of(cfg.identity, name, cfg.station.data_dir), "os user")


def authorize(
    cfg: StationConfig,
    store: Store | None,
    action: Action,
    claimed_role: str | None = None,
    actor: str | None = None,
    target: str = "",
    environ: Mapping[str, str] | None = None,
) -> tuple[Identity, Role]:
    """The identity running this and the role it acts in for ``action``; raises :class:`IdentityRefused`
    (audited as ``auth.refused`` with the identity) when it may not."""
    ident: Identity | None = None
    try:
        ident = current_identity(cfg, environ)
        return ident, _role_for(ident, action, claimed_role, actor)
    except IdentityRefused as err:
        if store is not None:
            store.audit.record(
                ident.name if ident else os_user(),
                "auth.refused",
                target or action.value,
                None,
                None,
                {
                    "action": action.value,
                    "claimed_role": claimed_role,
                    "claimed_actor": actor,
                    "holds": sorted(r.value for r in ident.roles) if ident else [],
                    "source": ident.source if ident else "token",
                    "why": err.message,
                },
            )
        raise


def _role_for(ident: Identity, action: Action, claimed_role: str | None, actor: str | None) -> Role:
    if actor is not None and actor != ident.name:
        raise IdentityRefused(
            f"{ident.name} may not act as {actor!r}: the audit trail records who runs the command",
            "drop --actor/--user; every action is signed with the operating-system user or token",
        )
    if not ident.roles:
        raise IdentityRefused(
            f"{ident.source} {ident.name!r} may not {action.value}: it holds no role at this station",
            "ask maintenance to map your user in identity.users of the station config",
        )
    if claimed_role:
        try:
            role = Role(claimed_role)
        except ValueError:
            raise IdentityRefused(f"unknown role {claimed_role!r}", "use operator, quality or maintenance") from None
        if role not in ident.roles:
            raise IdentityRefused(
                f"{ident.name} may not act as {role.value} (holds: {ident.holds()})",
                "claim a role you hold, or ask maintenance to map it in identity.users",
            )
        if not may(role, action):
            allowed = ", ".join(r.value for r in ROLE_ORDER if may(r, action))
            raise IdentityRefused(f"role {role.value!r} may not {action.value}", f"this needs one of: {allowed}")
        return role
    for role in ROLE_ORDER:
        if role in ident.roles and may(role, action):
            return role
    allowed = ", ".join(r.value for r in ROLE_ORDER if may(r, action))
    raise IdentityRefused(
        f"{ident.name} may not {action.value} (holds: {ident.holds()})", f"this needs one of: {allowed}"
    )


# ------------------------------------------------------------------------------------------ lock-out
class LockedOut(InspectorError):
    """Too many wrong PINs: the login is locked for a while."""


class PinLockout:
    """Counts wrong PINs per login target (e.g. ``gui:maintenance``) as ``auth.pin_failed`` audit rows since
    the last ``auth.login`` and within ``lockout_s``; at ``lockout_failures`` the target is locked until the
    newest failure is ``lockout_s`` old. Without a store it counts in this process's memory."""

    def __init__(self, section: IdentitySection, store: Store | None = None) -> None:
        self.section, self.store = section, store
        self._memory: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _failures(self, target: str, now: float) -> list[float]:
        since = now - self.section.lockout_s
        if self.store is None:
            return [t for t in self._memory.get(target, []) if t > since]
        from inspector.store.models import AuditRow

        with self.store.session() as s:
            ok = s.scalar(
                select(func.max(AuditRow.ts)).where(AuditRow.action == "auth.login", AuditRow.target == target)
            )
            since = max(since, ok or 0.0)
            return list(
                s.scalars(
                    select(AuditRow.ts)
                    .where(AuditRow.action == "auth.pin_failed", AuditRow.target == target, AuditRow.ts > since)
                    .order_by(AuditRow.ts)
                )
            )

    def check(self, target: str) -> None:
        """Raise :class:`LockedOut` while ``target`` is locked."""
        now = time.time()
        failures = self._failures(target, now)
        if len(failures) >= self.section.lockout_failures:
            wait = failures[-1] + self.section.lockout_s - now
            raise LockedOut(
                f"{target}: locked after {len(failures)} wrong PINs; try again in {max(wait, 1):.0f} s",
                "or ask maintenance; every attempt is in the audit trail",
            )

    def failed(self, target: str, name: str) -> None:
        now = time.time()
        with self._lock:
            self._memory.setdefault(target, []).append(now)
        if self.store is not None:
            self.store.audit.record(name, "auth.pin_failed", target, details={"name": name})
        if len(self._failures(target, now)) >= self.section.lockout_failures and self.store is not None:
            self.store.audit.record(
                name,
                "auth.locked_out",
                target,
                details={"failures": self.section.lockout_failures, "for_s": self.section.lockout_s},
            )

    def succeeded(self, target: str, name: str) -> None:
        with self._lock:
            self._memory.pop(target, None)
        if self.store is not None:
            self.store.audit.record(name, "auth.login", target)


__all__ = [
    "Identity",
    "IdentityRefused",
    "LockedOut",
    "PinLockout",
    "authorize",
    "check_secret",
    "current_identity",
    "hash_secret",
    "os_user",
]


# ------------------------------------------------------------------------------------------ CLI
def identity_app():  # type: ignore[no-untyped-def]
    """``inspector identity whoami | hash-pin | new-token``."""
    import getpass as _getpass

    import typer

    app = typer.Typer(help="Who you are to the station; PIN hashes and personal tokens.", no_args_is_help=True)
    config_opt = typer.Option(None, "--config", "-c", help="Station YAML file.")

    @app.command()
    def whoami(config: Path | None = config_opt) -> None:
        """Your identity and the roles it holds at this station."""
        from inspector.contracts.config import load_config

        try:
            ident = current_identity(load_config(config))
        except IdentityRefused as err:
            typer.echo(f"error: {err.message}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{ident.name} ({ident.source}): {ident.holds()}")

    @app.command("hash-pin")
    def hash_pin() -> None:
        """Read a PIN (twice, not echoed) and print its salted scrypt hash for gui.<role>.pin_hash."""
        pin, again = _getpass.getpass("PIN: "), _getpass.getpass("again: ")
        if pin != again or len(pin) < 4:
            typer.echo("error: the PINs differ or are shorter than 4 characters", err=True)
            raise typer.Exit(2)
        typer.echo(hash_secret(pin))

    @app.command("new-token")
    def new_token(name: str = typer.Argument(..., help="Token name (e.g. the person's name).")) -> None:
        """Make a personal token: prints the secret once (give it to its holder) and the config entry."""
        secret = secrets.token_urlsafe(24)
        typer.echo(f"token (give to {name}, shown once): {name}:{secret}")
        typer.echo(f"config: identity.tokens.{name}: {{roles: [quality], hash: '{hash_secret(secret)}'}}")

    return app

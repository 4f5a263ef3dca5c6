"""How an audit row and a chain head are hashed and signed, and where the station key lives.

``hash = sha256(prev_hash + canonical JSON of {seq, ts, actor, action, target, old, new, details})``,
``mac = HMAC-SHA256(station key, hash)``; a chain head (store id, seq, hash) kept outside the database is an
:class:`Anchor`, signed with the same key. The station key: the environment variable ``INSPECTOR_AUDIT_KEY``,
else ``<data_dir>/secrets/audit.key`` (generated at first use, mode 0600; refused when others may read it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.contracts.errors import InspectorError

GENESIS = "0" * 64
KEY_ENV = "INSPECTOR_AUDIT_KEY"


class AuditKeyError(InspectorError):
    """The station key of the audit trail is unsafe or missing."""


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8; non-JSON values become strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plain(value: Any) -> Any:
    """The JSON value as it will read back from the database."""
    return json.loads(canonical(value))


def row_hash(
    prev_hash: str, seq: int, ts: float, actor: str, action: str, target: str, old: Any, new: Any, details: Any
) -> str:
    body = canonical(
        {
            "seq": seq,
            "ts": ts,
            "actor": actor,
            "action": action,
            "target": target,
            "old": old,
            "new": new,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def row_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, b"audit-row:" + digest.encode(), hashlib.sha256).hexdigest()


def head_mac(key: bytes, store_id: str, seq: int, digest: str) -> str:
    return hmac.new(key, f"audit-head:{store_id}:{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def secrets_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets"


def key_path(data_dir: Path) -> Path:
    return secrets_dir(data_dir) / "audit.key"


def write_secret(path: Path, value: str) -> None:
    """Create ``path`` with owner-only permissions (0600, its folder 0700) unless it exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def read_secret(path: Path) -> str | None:
    """The stripped content of an owner-only secret file; refuses one that others may read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise AuditKeyError(
            f"{path} may be read by other users (mode {mode & 0o777:o})",
            f"chmod 600 {path} (and consider the key leaked: generate a new one)",
        )
    return path.read_text().strip() or None


def station_key(data_dir: Path | None, create: bool = True) -> bytes | None:
    """``INSPECTOR_AUDIT_KEY``, else the key file in the data folder (generated when ``create``)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    if data_dir is None:
        return None
    path = key_path(data_dir)
    if create and not path.exists():
        write_secret(path, secrets.token_hex(32))
    raw = read_secret(path)
    return raw.encode() if raw else None


@dataclass(frozen=True)
class Anchor:
    """A signed chain head kept outside the database."""

    where: str
    store_id: str
    seq: int
    hash: str
    signed: bool

    @staticmethod
    def parse(where: str, raw: str | bytes | None, key: bytes | None) -> Anchor | None:
        if not raw:
            return None
        try:
            d = json.loads(raw)
            store_id, seq, digest, mac = str(d["store_id"]), int(d["seq"]), str(d["hash"]), str(d.get("mac") or "")
        except (ValueError, KeyError, TypeError):
            return Anchor(where, "?", -1, "", False)
        signed = key is not None and hmac.compare_digest(mac, head_mac(key, store_id, seq, digest))
        return Anchor(where, store_id, seq, digest, signed)


def read_text_or_none(path: Path | None) -> str | None:
    """A file's text; None when there is no path or no file."""
    try:
        return path.read_text() if path else None
    except FileNotFoundError:
        return None

"""Tenants: who is calling, from the API key.

Keys are configured as comma-separated entries (VIDEOQA_API_KEYS for tenants, VIDEOQA_ADMIN_KEYS for operators):

- `NAME:SHA256HEX`: tenant NAME, whose key hashes (sha256, hex) to SHA256HEX. Only hashes need to be stored in
  the deployment's configuration; several entries may share a NAME (key rotation: both keys reach one tenant).
- `KEY`: a plain key, for development. Its tenant is named `key-` + the first 8 hex digits of the key's hash,
  so the name (which is logged) never reveals the key.

No tenant keys configured: every caller is the one tenant `anonymous`. Everything a tenant creates (jobs, their
idempotency keys, file registry entries) is scoped to its name; another tenant's id answers 404, as if it did
not exist. Admin keys are separate: they may list, read and cancel every tenant's jobs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ANONYMOUS = "anonymous"
_HASHED = re.compile(r"^(?P<name>[^:\s]+):(?P<digest>[0-9a-fA-F]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_key(key: str) -> str:
    """The sha256 hex digest configured for `key` (shell: `printf %s KEY | sha256sum`)."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(spec: str, setting: str = "api_keys") -> dict[str, str]:
    """`NAME:SHA256HEX` / plain-key entries -> {sha256 hex digest of the key: tenant name}."""
    ring: dict[str, str] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        hashed = _HASHED.match(entry)
        if hashed:
            name, digest = hashed["name"], hashed["digest"].lower()
            if not _NAME.match(name):
                raise ValueError(
                    f"{setting}: tenant name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
                    "(starting with a letter or digit)"
                )
        else:
            digest = hash_key(entry)
            name = f"key-{digest[:8]}"
        ring[digest] = name
    return ring


def check_keyrings(tenants: dict[str, str], admins: dict[str, str]) -> None:
    """Admin keys are kept apart from tenant keys: no shared key, no shared name."""
    if set(tenants) & set(admins):
        raise ValueError("a key is listed in both api_keys and admin_keys; give operators their own key")
    shared = set(tenants.values()) & set(admins.values())
    if shared:
        raise ValueError(f"admin_keys reuse tenant name(s) {sorted(shared)}; give operators their own name")
    if ANONYMOUS in tenants.values() or ANONYMOUS in admins.values():
        raise ValueError(f"{ANONYMOUS!r} is reserved for the tenant of a gateway without keys")


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    tenant: str
    """Scope of everything this caller creates and can see (the admin's own uploads and jobs too)."""
    admin: bool = False
    """Operators: may list, read and cancel every tenant's jobs."""
    rate_key: str = ""
    """Identity for rate limits: the tenant (or, without keys, the client address)."""

    def can_see(self, owner: str) -> bool:
        return self.admin or owner == self.tenant

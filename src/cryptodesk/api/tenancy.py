"""The tenant a request acts for, as a FastAPI dependency.

Until authentication exists the tenant is whatever the ``X-Tenant`` header
names (``default`` without one), so anyone who can reach the API can act for
any tenant: run it only where every client is trusted. Authentication will
replace this dependency with the tenant of the authenticated principal; the
routes keep depending on ``Tenant`` and do not change.

A tenant id is lower-case letters, digits, ``_`` and ``-``, at most 63
characters, starting with a letter or digit; anything else is a 400
problem+json naming the header, never a silent fallback to another tenant.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from fastapi import Depends, Header

from cryptodesk.domain.errors import DomainError

TENANT_HEADER: Final = "X-Tenant"
DEFAULT_TENANT: Final = "default"
TENANT_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant(text: str, *, field: str = TENANT_HEADER) -> str:
    """``text`` when it is a valid tenant id, else ``DomainError`` naming ``field``."""
    if not TENANT_PATTERN.fullmatch(text):
        raise DomainError(
            f"{field} {text[:80]!r} is not a tenant id: 1-63 characters of a-z, 0-9, _ and -, "
            "starting with a letter or digit",
            field=field,
        )
    return text


async def request_tenant(
    x_tenant: Annotated[
        str | None,
        Header(
            alias=TENANT_HEADER,
            description="The tenant acted for (until authentication replaces it); "
            f"default `{DEFAULT_TENANT}`.",
            examples=["acme"],
        ),
    ] = None,
) -> str:
    return check_tenant(DEFAULT_TENANT if x_tenant is None else x_tenant)


Tenant = Annotated[str, Depends(request_tenant)]

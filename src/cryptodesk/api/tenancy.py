"""The tenant a request acts for, as a FastAPI dependency.

It is the tenant of the authenticated principal (``api/security.py``): a
token or API key of one organisation can only ever reach that organisation's
rows, and no header or parameter can name another. Routes depend on
``Tenant`` and pass it to the services, whose repositories require it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cryptodesk.api.security import CurrentPrincipal
from cryptodesk.domain.auth import AuthenticationError


async def request_tenant(principal: CurrentPrincipal) -> str:
    if not principal.user_id:  # anonymous: public routes have no tenant
        raise AuthenticationError("this needs credentials: a bearer token or an X-API-Key")
    return principal.tenant


Tenant = Annotated[str, Depends(request_tenant)]

__all__ = ["Tenant", "request_tenant"]

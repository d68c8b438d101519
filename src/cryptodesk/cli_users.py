"""``cryptodesk user ...`` and ``cryptodesk audit verify``: users from the shell.

The operator running these holds the database, so they act as an admin of
the named tenant (recorded as actor ``cli`` in the audit log). Exit codes:
0 done; 1 the audit chain is broken; 2 a usage error, one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from cryptodesk.domain.auth import Principal
from cryptodesk.domain.errors import DomainError

if TYPE_CHECKING:
    from cryptodesk.services.auth_service import AuthService

T = TypeVar("T")
user_app = typer.Typer(help="Users of the API: create, list, change roles, revoke.",
                       no_args_is_help=True)  # fmt: skip
audit_app = typer.Typer(help="The security audit log.", no_args_is_help=True)
EmailOpt = Annotated[str, typer.Option("--email", help="The user's e-mail address.")]
RoleOpt = Annotated[str, typer.Option("--role", help="admin, manager, trader or viewer.")]


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(audit_app, name="audit")


def _with_service(work: Callable[[AuthService], Awaitable[T]]) -> T:
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.api_wiring import auth_service
    from cryptodesk.cli import fail
    from cryptodesk.cli_ledger import _settings, migrated_engine

    settings = _settings()

    async def run() -> T:
        engine = await migrated_engine(settings)
        try:
            return await work(auth_service(settings, engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        fail(str(exc))
    except (StorageError, OSError) as exc:
        fail(str(exc))


async def _user_of(service: AuthService, email: str) -> tuple[str, str]:
    from cryptodesk.services.auth_service import check_email

    user = await service.store.user_by_email(check_email(email))
    if user is None:
        raise DomainError(f"no user with e-mail {email}", field="email")
    return user.tenant_id, user.id


def _operator(tenant: str) -> Principal:
    return Principal(tenant, "cli", "cli", "admin")


@user_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id (created when new).")],
    email: EmailOpt,
    role: RoleOpt,
    password: Annotated[
        str,
        typer.Option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
                     help="At least 12 characters; asked for when not given."),
    ],
) -> None:  # fmt: skip
    """Create a user of a tenant."""

    async def work(service: AuthService) -> str:
        row = await service.create_user(tenant, email, password, role, actor="cli")
        return row.id

    user_id = _with_service(work)
    typer.echo(f"created {email.strip().lower()} ({role}) in tenant {tenant}: id {user_id}")


@user_app.command("list")
def list_users(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The users of a tenant."""
    from cryptodesk.domain.auth import check_tenant

    rows = _with_service(lambda service: service.users(check_tenant(tenant)))
    if as_json:
        out = [{"id": r.id, "email": r.email, "role": r.role,
                "disabled": r.disabled_at is not None} for r in rows]  # fmt: skip
        typer.echo(json.dumps(out, indent=2))
        return
    for r in rows:
        typer.echo(f"{r.email}\t{r.role}\t{r.id}")


@user_app.command("set-role")
def set_role(email: EmailOpt, role: RoleOpt) -> None:
    """Change a user's role (effective within seconds, even for tokens issued)."""
    from cryptodesk.services.auth_service import Origin

    async def work(service: AuthService) -> None:
        tenant, user_id = await _user_of(service, email)
        await service.set_role(_operator(tenant), user_id, role, Origin())

    _with_service(work)
    typer.echo(f"{email.strip().lower()} is now {role}")


@user_app.command("revoke-all")
def revoke_all(email: EmailOpt) -> None:
    """Revoke every refresh and access token of a user."""
    from cryptodesk.services.auth_service import Origin

    async def work(service: AuthService) -> int:
        tenant, user_id = await _user_of(service, email)
        return await service.revoke_all(_operator(tenant), user_id, Origin())

    count = _with_service(work)
    typer.echo(f"revoked {count} refresh tokens and every access token of {email}")


@audit_app.command("verify")
def verify() -> None:
    """Check the audit log's hash chain; exit 1 naming the first broken event."""

    async def work(service: AuthService) -> tuple[int, str | None]:
        broken = await service.store.verify_audit()
        head, _ = await service.store.audit_head()
        return head, None if broken is None else broken.reason

    events, reason = _with_service(work)
    if reason is not None:
        typer.echo(f"audit log broken: {reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {events} events")

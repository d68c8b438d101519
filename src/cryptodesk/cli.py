"""The ``cryptodesk`` command line (Typer).

User mistakes (bad settings, a port in use, an unusable data dir) print one
line to stderr and exit with code 2, as usage errors do.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, NoReturn

import msgspec
import typer

from cryptodesk import __version__
from cryptodesk.config import Settings, SettingsError, load_settings

app = typer.Typer(help="cryptodesk: crypto trading analytics backend.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


def fail(message: str) -> NoReturn:
    typer.echo(f"cryptodesk: error: {message}", err=True)
    raise typer.Exit(2)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        fail(str(exc))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (overrides HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides PORT; 0 = any free).")] = None,
    roles: Annotated[str, typer.Option(help="all, or a comma list of api,ingest,compute")] = "all",
    loop: Annotated[
        str,
        typer.Option(
            envvar="CRYPTODESK_EVENT_LOOP",
            help="Event loop: auto (uvloop when installed), uvloop or asyncio.",
        ),
    ] = "auto",
) -> None:
    """Run the API, ingest and compute roles (all in one process by default)."""
    from cryptodesk import runtime
    from cryptodesk.observability.logging import configure_logging
    from cryptodesk.wiring import StartupError

    settings = settings_or_exit(host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    try:
        with asyncio.Runner(loop_factory=runtime.event_loop_factory(loop)) as runner:
            code = runner.run(runtime.serve(settings, runtime.parse_roles(roles)))
    except StartupError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    values = settings_or_exit().masked()
    if as_json:
        typer.echo(msgspec.json.format(msgspec.json.encode(values), indent=2).decode())
        return
    width = max(len(k) for k in values)
    for name, value in values.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = ",".join(value)
        elif isinstance(value, list):  # signal rules: one JSON line
            shown = msgspec.json.encode(value).decode()
        else:
            shown = value
        typer.echo(f"CRYPTODESK_{name.upper():<{width}}  {shown}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations up to REVISION (default head)."""
    from cryptodesk.adapters.db import migrate
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.runtime import check_data_dir
    from cryptodesk.wiring import StartupError

    settings = settings_or_exit()
    try:
        if settings.is_embedded_db:
            check_data_dir(settings)
        migrate.upgrade(settings.database_url, revision)
        typer.echo(f"database at revision {migrate.current(settings.database_url)}")
    except (StorageError, StartupError) as exc:
        fail(str(exc))


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    from cryptodesk.adapters.db import migrate
    from cryptodesk.adapters.db.engine import StorageError

    settings = settings_or_exit()
    try:
        typer.echo(migrate.current(settings.database_url) or "none")
    except StorageError as exc:
        fail(str(exc))


# Command groups defined in their own modules register themselves here.
from cryptodesk.cli_analytics import register as register_analytics  # noqa: E402
from cryptodesk.cli_backtest import register as register_backtest  # noqa: E402
from cryptodesk.cli_exchanges import register as register_exchanges  # noqa: E402
from cryptodesk.cli_files import register as register_files  # noqa: E402
from cryptodesk.cli_ledger import register as register_ledger  # noqa: E402
from cryptodesk.cli_optimize import register as register_optimize  # noqa: E402
from cryptodesk.cli_orders import register as register_orders  # noqa: E402
from cryptodesk.cli_portfolio import register as register_portfolio  # noqa: E402
from cryptodesk.cli_risk import register as register_risk  # noqa: E402
from cryptodesk.cli_tax import register as register_tax  # noqa: E402
from cryptodesk.cli_users import register as register_users  # noqa: E402

register_files(app)
register_exchanges(app)
register_backtest(app)
register_optimize(app)
register_analytics(app)
register_ledger(app)
register_tax(app)
register_users(app)
register_risk(app)
register_portfolio(app)
register_orders(app)


def main() -> None:
    app(prog_name="cryptodesk")


if __name__ == "__main__":  # pragma: no cover
    main()

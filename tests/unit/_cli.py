"""A command group as ``cryptodesk`` registers it, for CliRunner tests of that group alone."""

from __future__ import annotations

from collections.abc import Callable

import typer


def cli_app(register: Callable[[typer.Typer], None]) -> typer.Typer:
    """A Typer app with ``register``'s commands under it (the callback makes Typer keep
    the group's name in the command line, as the real ``cryptodesk`` does)."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The commands as ``cryptodesk`` registers them."""

    register(app)
    return app

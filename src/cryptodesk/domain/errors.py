"""Errors raised by domain rules; the API and CLI map them to 4xx / exit 2."""


class DomainError(ValueError):
    """A value broke a domain rule. ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

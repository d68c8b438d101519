"""cryptodesk: a crypto trading analytics backend."""

__version__ = "0.1.0"

"""HTTP routes, one module per concern; each exposes a router factory."""

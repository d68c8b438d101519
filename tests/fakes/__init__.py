"""Local fake servers speaking real third-party wire formats (test code only)."""

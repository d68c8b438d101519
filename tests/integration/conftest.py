"""Integration tests use the real-server fixtures of tests/conftest.py."""

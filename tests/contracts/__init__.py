"""Adapter contract suites: one class per interface, subclassed once per implementation.

The suites live outside ``test_*.py`` files so pytest collects them only through
the subclasses that supply a fixture (``bus``, ``cache``) for a real engine.
Asserts here are rewritten like those in test modules, so failures show values.
"""

import pytest

pytest.register_assert_rewrite("tests.contracts.bus_contract", "tests.contracts.cache_contract")

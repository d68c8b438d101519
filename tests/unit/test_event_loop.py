"""``serve``'s event loop choice."""

from __future__ import annotations

import pytest
import uvloop

from cryptodesk.runtime import event_loop_factory
from cryptodesk.wiring import StartupError


def test_auto_and_uvloop_pick_uvloop_and_asyncio_the_standard_loop() -> None:
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory(" UVLOOP ") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def test_an_unknown_loop_is_a_startup_error_naming_the_choices() -> None:
    with pytest.raises(
        StartupError, match="unknown event loop 'trio'; choose from auto, uvloop, asyncio"
    ):
        event_loop_factory("trio")

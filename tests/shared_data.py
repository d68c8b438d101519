"""Where the real market data of ``../shared/data`` is: beside the project root
(``CRYPTODESK_SHARED_DATA`` names another place, for a checkout elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CRYPTODESK_SHARED_DATA") or ROOT.parent / "shared" / "data")

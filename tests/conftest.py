"""Suite-wide setup. Imported before any test module, so before Ray is imported."""

from __future__ import annotations

import os

# Keep a local Ray cluster entirely on loopback: with this, Ray takes 127.0.0.1 as
# the node address instead of the machine's outward-facing one.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

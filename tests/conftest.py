"""Test-wide settings: under CI, hypothesis runs a fixed set of examples.

CI (which sets CI=true) must not fail on an example nobody can reproduce, so there the
property tests are derandomized and keep no example database; a developer's run explores
new random examples each time.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

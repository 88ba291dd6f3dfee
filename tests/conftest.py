"""Hypothesis profiles: "ci" by default, "long" with TRACKPIPE_FUZZ=long (`make fuzz`)."""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=150)
settings.register_profile("long", max_examples=150 * 20, deadline=None)
settings.load_profile(os.environ.get("TRACKPIPE_FUZZ", "ci"))

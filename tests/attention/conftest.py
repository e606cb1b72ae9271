"""Tiny models: one intra-op thread (see tests/factories/threads.py)."""

from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)

"""Tiny tensors here: one intra-op thread (see ``tests.factories.threads``)."""

from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)

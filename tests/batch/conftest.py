"""One intra-op thread for the tiny tensors of these tests (see tests/factories/threads.py)."""

from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)

"""Feature cards and labels for the server, from a feature store (``tracewire.dashboards``).

The store is SQLite; the server answers requests from a thread pool. Every store call here runs
on ONE worker thread (:class:`~tracewire.server.serial_worker.SerialWorker`), which also opens the
store lazily from an ``opener``: a store that insists on one thread works, requests simply queue
(a card lookup is milliseconds), and a store that fails to open is a 503, not a failed start.

Labels also flow into the graph: a view's feature nodes get the store's label as their ``clerp``
(:meth:`FeatureService.labels`, cached and refreshed after each label change).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tracewire.server.serial_worker import SerialWorker

T = TypeVar("T")
logger = logging.getLogger(__name__)


class FeatureCardLike(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class FeatureSource(Protocol):
    """What the server needs from ``tracewire.dashboards.FeatureStore``."""

    def card(self, layer: int, feature: int) -> FeatureCardLike | None: ...

    def set_label(self, layer: int, feature: int, text: str | None) -> None: ...

    def labels(self) -> dict[tuple[int, int], str]: ...


class FeatureService:
    """Runs every call to a feature store on one worker thread (see the module docstring)."""

    def __init__(self, opener: Callable[[], FeatureSource], *, writable: bool = True) -> None:
        self._opener = opener
        self._store: FeatureSource | None = None
        self.writable = writable
        self._worker = SerialWorker("features")
        self._labels: dict[tuple[int, int], str] | None = None
        self._labels_lock = threading.Lock()

    async def card(self, layer: int, feature: int) -> dict[str, Any] | None:
        def lookup() -> dict[str, Any] | None:
            card = self._source().card(layer, feature)
            return None if card is None else card.to_json()

        return await self._run(lookup)

    async def set_label(self, layer: int, feature: int, text: str | None) -> None:
        await self._run(lambda: self._source().set_label(layer, feature, text))
        with self._labels_lock:
            self._labels = None

    def labels(self) -> dict[tuple[int, int], str]:
        """All labels (user labels over automatic ones, as the store decides); cached.

        A store that cannot be read gives no labels (logged), rather than breaking graph views.
        """
        with self._labels_lock:
            if self._labels is None:
                try:
                    self._labels = self._worker.submit(lambda: dict(self._source().labels())).result()
                except Exception as exc:
                    logger.warning("feature labels unavailable: %s", exc)
                    return {}
            return self._labels

    def close(self) -> None:
        self._worker.close()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await self._worker.run(fn)

    def _source(self) -> FeatureSource:
        if self._store is None:  # only ever reached on the worker thread
            try:
                self._store = self._opener()
            except Exception as exc:
                raise FeatureStoreUnavailable(f"the feature store cannot be opened: {exc}") from exc
        return self._store


class FeatureStoreUnavailable(RuntimeError):
    """The feature store could not be opened (a 503 for the client, with this message)."""


def open_feature_store(path: str, *, readonly: bool) -> Callable[[], FeatureSource]:
    """An opener for ``tracewire.dashboards.FeatureStore`` at ``path`` (imported on first use)."""

    def opener() -> FeatureSource:
        from tracewire.dashboards import FeatureStore  # type: ignore[attr-defined]

        store: FeatureSource = FeatureStore(path, readonly=readonly)
        return store

    return opener

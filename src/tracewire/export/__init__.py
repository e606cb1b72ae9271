"""Graphs to share: one self-contained HTML file of a graph (:func:`export_html`)."""

from tracewire.export.standalone import DEFAULT_MAX_BYTES, StandaloneExport, export_html

__all__ = ["DEFAULT_MAX_BYTES", "StandaloneExport", "export_html"]

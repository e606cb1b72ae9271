"""The end-to-end demo: train, attribute, label, score, serve (``tracewire demo``)."""

from tracewire.demo.pipeline import SHOWCASE, DemoSettings, run_demo

__all__ = ["SHOWCASE", "DemoSettings", "run_demo"]

"""Training curves: the logged records as ``curves.json`` and a four-panel ``curves.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracewire.atomic import atomic_write_bytes, atomic_write_with

PANELS = (("loss", "loss"), ("nmse", "NMSE (FVU), mean over layers"), ("l0", "L0 per layer"),
          ("dead_frac", "dead fraction"))  # fmt: skip


def write_curves(directory: Path, records: list[dict[str, Any]], title: str = "") -> None:
    """Write ``curves.json`` and ``curves.png`` (matplotlib, Agg backend) into ``directory``."""
    atomic_write_bytes(directory / "curves.json", json.dumps(records, indent=1).encode("utf-8"))
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    tokens = [r["tokens"] for r in records]
    for ax, (key, label) in zip(axes.flat, PANELS):
        ax.plot(tokens, [r[key] for r in records])
        ax.set_title(label)
        ax.set_xlabel("training tokens")
        if key in ("loss", "nmse"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, directory / "curves.png")
    plt.close(fig)


def save_png(fig: Any, path: Path) -> None:
    """Save a matplotlib figure atomically (temp file + rename)."""
    atomic_write_with(path, lambda temp: fig.savefig(temp, dpi=100, format="png"))

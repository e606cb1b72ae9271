"""``evaluate_transcoders``: how good a transcoder set is, per layer and as a replacement model.

Per layer (on corpus windows, BOS positions excluded, as in training):

- NMSE = FVU = Σ‖ŷ − y‖² / Σ‖y − ȳ‖², where ŷ is the set's reconstruction from the *model's* inputs;
- L0 = mean active features per token;
- dead fraction = share of features whose firing-rate EMA (over eval batches) is below ``dead_rate``.

Spliced replacement model: every MLP output is replaced by the set's reconstruction computed from
the spliced run's own inputs (so errors compound across layers, no error terms). Position 0 (the
BOS) keeps the model's own MLP output, in the spliced and in the zero-ablated run alike: BOS
activations are excluded from training, the BOS MLP output is a constant of the model, and zeroing
it would only measure the attention sink. Reported: KL(original ‖ spliced) and top-1 agreement
over positions 1.., and CE loss recovered ``(L_zero − L_spliced) / (L_zero − L_orig)`` where
``L_zero`` zero-ablates every MLP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as fn
from torch import Tensor
from tqdm import tqdm

from tracewire.atomic import atomic_write_bytes
from tracewire.corpus import TokenCorpus
from tracewire.errors import InvalidArgumentError
from tracewire.models.hooks import Live, Session, Wiring
from tracewire.models.loading import LoadedModel
from tracewire.training.activations import layer_activations
from tracewire.training.curves import save_png
from tracewire.transcoders import TranscoderSet

log = logging.getLogger(__name__)

SpliceMode = Literal["replace", "zero"]


class _Splice(Session):
    """Every layer's output site returns the set's reconstruction from the run's own inputs (or zeros)."""

    def __init__(self, ts: TranscoderSet, mode: SpliceMode) -> None:
        self.ts, self.mode = ts, mode
        self.inputs: dict[int, Tensor] = {}
        self.written: dict[int, Tensor] = {}  # decode(i, acts_i): [..., n_out, d]

    def transcoder_input(self, layer: int, x: Tensor) -> None:
        self.inputs[layer] = x
        if self.mode == "replace":
            self.written[layer] = self.ts.decode(layer, self.ts.encode(layer, x.to(self.ts.dtype)))

    def output_site(self, layer: int, live: Live) -> Tensor:
        ts, original = self.ts, live()
        if self.mode == "zero":
            new = torch.zeros_like(original)
        else:
            new = ts.b_dec[layer] + ts.skip(layer, self.inputs[layer].to(ts.dtype))
            for source in range(layer + 1):
                w = self.written.get(source)
                if w is not None and layer in ts.output_layers(source):
                    new = new + w[..., layer - source, :]
            new = new.to(original.dtype)
        new[:, 0] = original[:, 0]  # the BOS keeps its own MLP output (see the module docstring)
        return new


@contextlib.contextmanager
def spliced(loaded: LoadedModel, ts: TranscoderSet, mode: SpliceMode = "replace") -> Iterator[None]:
    """While active, every layer's output site returns the set's reconstruction (or zeros)."""
    with Wiring.for_transcoders(loaded, ts).active(_Splice(ts, mode)):
        yield


def logit_metrics(orig: Tensor, new: Tensor, ids: Tensor) -> dict[str, float]:
    """Sums over positions 1.. of a batch: KL(orig ‖ new), top-1 agreement, CE of both (next-token)."""
    lp_orig = fn.log_softmax(orig[:, 1:].float(), dim=-1)
    lp_new = fn.log_softmax(new[:, 1:].float(), dim=-1)
    kl = (lp_orig.exp() * (lp_orig - lp_new)).sum(-1)
    agree = (lp_orig.argmax(-1) == lp_new.argmax(-1)).float()
    targets = ids[:, 2:]
    ce_orig = -lp_orig[:, :-1].gather(-1, targets[..., None]).squeeze(-1)
    ce_new = -lp_new[:, :-1].gather(-1, targets[..., None]).squeeze(-1)
    return {
        "kl_sum": float(kl.sum()),
        "agree_sum": float(agree.sum()),
        "n_positions": float(kl.numel()),
        "ce_orig_sum": float(ce_orig.sum()),
        "ce_new_sum": float(ce_new.sum()),
        "n_targets": float(ce_orig.numel()),
    }


def ce_recovered(ce_zero: float, ce_spliced: float, ce_orig: float) -> float:
    """``(L_zero − L_spliced) / (L_zero − L_orig)``: 1 = as good as the model, 0 = as bad as no MLPs."""
    gap = ce_zero - ce_orig
    return (ce_zero - ce_spliced) / gap if abs(gap) > 1e-12 else float("nan")


@torch.no_grad()
def evaluate_transcoders(
    loaded: LoadedModel,
    ts: TranscoderSet,
    corpus: TokenCorpus,
    *,
    seq_len: int = 64,
    n_windows: int = 32,
    batch_windows: int = 8,
    start: int | None = None,
    dead_rate: float = 1e-6,
    ema_decay: float = 0.9,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-layer NMSE / L0 / dead fraction and spliced-model KL / top-1 / CE recovered.

    Windows ``start .. start + n_windows`` of ``corpus`` (default: the last ``n_windows``, which
    training holds out).
    """
    total = corpus.n_windows(seq_len)
    first = total - n_windows if start is None else start
    if first < 0 or first + n_windows > total:
        raise InvalidArgumentError(
            f"windows {first}..{first + n_windows} outside the corpus's {total} windows of {seq_len}"
        )
    L, F = ts.n_layers, ts.d_transcoder
    err = torch.zeros(L, dtype=torch.float64)
    sq = torch.zeros(L, dtype=torch.float64)
    s = torch.zeros(L, ts.d_model, dtype=torch.float64)
    active = torch.zeros(L, dtype=torch.float64)
    n_tok = 0
    fire_ema: Tensor | None = None
    sums: dict[str, float] = {}
    batches = list(corpus.windows(seq_len, batch_size=batch_windows, start=first, stop=first + n_windows))
    for ids in tqdm(batches, desc="evaluate", unit="batch", disable=(not progress) or None):
        x, y = layer_activations(loaded, ids, ts.config.input_site, ts.config.output_site)
        xs = [x[layer].to(ts.dtype) for layer in range(L)]
        acts = [ts.encode(layer, xs[layer]) for layer in range(L)]
        recon = ts.reconstruct(xs, acts)
        for layer in range(L):
            yl = y[layer].double()
            err[layer] += (recon[layer].double() - yl).pow(2).sum().cpu()
            sq[layer] += yl.pow(2).sum().cpu()
            s[layer] += yl.sum(0).cpu()
            active[layer] += (acts[layer] != 0).sum().cpu()
        n_tok += x.shape[1]
        fired = torch.stack([(a != 0).float().mean(0) for a in acts]).cpu()
        fire_ema = fired if fire_ema is None else ema_decay * fire_ema + (1 - ema_decay) * fired
        ids = ids.to(loaded.device)
        orig = loaded.model(ids).logits
        with spliced(loaded, ts, "replace"):
            new = loaded.model(ids).logits
        with spliced(loaded, ts, "zero"):
            zero = loaded.model(ids).logits
        for key, value in logit_metrics(orig, new, ids).items():
            sums[key] = sums.get(key, 0.0) + value
        sums["ce_zero_sum"] = sums.get("ce_zero_sum", 0.0) + logit_metrics(orig, zero, ids)["ce_new_sum"]
    var = sq - s.pow(2).sum(-1) / n_tok
    nmse = (err / var.clamp_min(1e-30)).float()
    l0 = (active / n_tok).float()
    assert fire_ema is not None
    dead = (fire_ema < dead_rate).float().mean(1)
    n_pos, n_tgt = sums["n_positions"], sums["n_targets"]
    ce = {name: sums[f"ce_{name}_sum"] / n_tgt for name in ("orig", "new", "zero")}
    report = {
        "model": loaded.name,
        "transcoders": ts.extra_repr(),
        "windows": {"first": first, "count": n_windows, "seq_len": seq_len, "tokens": n_tok},
        "nmse_per_layer": [round(float(v), 6) for v in nmse],
        "l0_per_layer": [round(float(v), 3) for v in l0],
        "dead_frac_per_layer": [round(float(v), 4) for v in dead],
        "nmse_mean": float(nmse.mean()),
        "l0_mean": float(l0.mean()),
        "dead_frac_mean": float(dead.mean()),
        "n_features_per_layer": F,
        "spliced": {
            "kl": sums["kl_sum"] / n_pos,
            "top1_agreement": sums["agree_sum"] / n_pos,
            "ce_orig": ce["orig"],
            "ce_spliced": ce["new"],
            "ce_zero_ablated": ce["zero"],
            "ce_recovered": ce_recovered(ce["zero"], ce["new"], ce["orig"]),
            "positions": int(n_pos),
        },
    }
    return report


def write_eval_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """``eval.json`` and ``eval.png`` (per-layer NMSE, L0, dead fraction; spliced numbers in the title)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "eval.json", json.dumps(report, indent=1).encode("utf-8"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    layers = list(range(len(report["nmse_per_layer"])))
    for ax, key, label in zip(axes, ("nmse_per_layer", "l0_per_layer", "dead_frac_per_layer"),
                              ("NMSE (FVU)", "L0", "dead fraction")):  # fmt: skip
        ax.bar(layers, report[key])
        ax.set_title(label)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3, axis="y")
    sp = report["spliced"]
    fig.suptitle(f"{report['model']}: spliced KL {sp['kl']:.3f}, top-1 {sp['top1_agreement']:.1%}, "
                 f"CE recovered {sp['ce_recovered']:.1%}")  # fmt: skip
    fig.tight_layout()
    save_png(fig, out / "eval.png")
    plt.close(fig)
    return out / "eval.json"

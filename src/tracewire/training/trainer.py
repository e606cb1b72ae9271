"""``train_transcoders``: the training loop, with exact resume and data parallelism.

One step: read the step's activations (a pure function of the step, see ``activations``),
standardise, forward, losses, backward, average gradients across ranks, clip, Adam. Everything the
next step depends on (parameters, Adam moments, step, standardisation, firing EMA, RNG) is in the
checkpoint, and the data position *is* the step, so a run killed at any point and resumed with
``resume=True`` produces bit-identical parameters to an uninterrupted run on the same machine.

Output directory: the transcoder set in the circuit-tracer layout (``config.yaml`` +
``layer_i.safetensors`` or ``W_enc_i``/``W_dec_i``; standardisation folded in), ``training.json``
(config, final per-layer NMSE / L0 / dead fraction on held-out windows, timings),
``curves.json`` / ``curves.png`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import CheckpointError, InvalidArgumentError
from tracewire.threads import refresh_threads, use_thread_policy
from tracewire.training import distributed
from tracewire.training.activations import ActivationSource
from tracewire.training.checkpoint import (
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
)
from tracewire.training.config import RESUME_MUTABLE_FIELDS, STRUCTURAL_FIELDS, TrainConfig
from tracewire.training.curves import write_curves
from tracewire.training.losses import (
    auxk_loss,
    compute_losses,
    layer_fvu,
    layer_l0,
    learning_rate,
    sparsity_coefficient,
)
from tracewire.training.module import TrainableTranscoders
from tracewire.transcoders import TranscoderSet, save_transcoders

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
REPORT = "training.json"


@dataclass
class TrainResult:
    """What a finished run returns (rank 0 also wrote it all to ``out_dir``)."""

    transcoders: TranscoderSet
    module: TrainableTranscoders
    report: dict[str, Any]
    curves: list[dict[str, Any]]
    out_dir: Path


@torch.no_grad()
def estimate_statistics(
    source: ActivationSource,
    n_batches: int,
    rank: int,
    world: int,
    *,
    fit_skip: bool = False,
    ridge: float = 1e-2,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor | None]:
    """Standardisation (per-dimension means, per-layer root-mean variances of inputs and targets) and,
    with ``fit_skip``, the least-squares linear map from standardised inputs to standardised targets.

    The least-squares skip is a closed-form head start for skip transcoders: the linear part of each
    MLP is solved from the first batches, so the features only have to learn what is not linear.
    All moments are summed over ranks, so every rank gets the same answer.
    """
    L, d = source.n_layers, source.d_model
    sx = torch.zeros(L, d, dtype=torch.float64)
    sy = torch.zeros(L, d, dtype=torch.float64)
    syy = torch.zeros(L, d, dtype=torch.float64)
    sxx = torch.zeros(L, d, d if fit_skip else 1, dtype=torch.float64)
    sxy = torch.zeros(L, d, d if fit_skip else 1, dtype=torch.float64)
    count = torch.zeros(1, dtype=torch.float64)
    for step in range(n_batches):
        x, y = (t.detach().cpu().double() for t in source.batch(step, rank, world))
        sx += x.sum(1)
        sy += y.sum(1)
        syy += y.pow(2).sum(1)
        if fit_skip:
            sxx += x.transpose(1, 2) @ x
            sxy += x.transpose(1, 2) @ y
        else:
            sxx[..., 0] += x.pow(2).sum(1)
        count += x.shape[1]
    for tensor in (sx, sy, syy, sxx, sxy, count):
        distributed.sum_(tensor, world)
    n = float(count)
    mu_in, mu_out = sx / n, sy / n
    var_in = (sxx.diagonal(dim1=1, dim2=2) if fit_skip else sxx[..., 0]) / n - mu_in.pow(2)
    s_in = var_in.mean(1).clamp_min(1e-12).sqrt()
    s_out = (syy / n - mu_out.pow(2)).mean(1).clamp_min(1e-12).sqrt()
    stats = (mu_in.float(), s_in.float(), mu_out.float(), s_out.float())
    if not fit_skip:
        return stats, None
    cov_xx = (sxx / n - mu_in[:, :, None] * mu_in[:, None, :]) / s_in[:, None, None] ** 2
    cov_xy = (sxy / n - mu_in[:, :, None] * mu_out[:, None, :]) / (s_in * s_out)[:, None, None]
    eye = torch.eye(d, dtype=torch.float64)
    # One solve per layer: a batched solve runs LAPACK inside torch's parallel_for, and MKL's own
    # OpenMP team nested in it was seen to spin forever on a loaded 2-core machine.
    solution = torch.stack([torch.linalg.solve(cov_xx[i] + ridge * eye, cov_xy[i]) for i in range(L)])
    return stats, solution.transpose(1, 2).float().contiguous()


def _dead(last_fired: Tensor, step: int, window: int) -> Tensor:
    """``[L, F]``: features that did not fire in the ``window`` steps before ``step``."""
    return step - 1 - last_fired >= window


@torch.no_grad()
def init_encoder_from_data(
    module: TrainableTranscoders, source: ActivationSource, generator: torch.Generator
) -> None:
    """Encoder rows = standardised inputs of random tokens of the first batch(es), unit norm.

    Each feature then starts as a detector of one real input direction, so it fires from the first
    step; a random direction in d dimensions is nearly orthogonal to the data and often never does.
    Every rank reads the same batches and draws the same tokens, so the ranks stay identical.
    """
    F = module.n_features
    xs_parts: list[Tensor] = []
    step = 0
    while sum(p.shape[1] for p in xs_parts) < F:
        x, y = source.batch(step, 0, 1)
        xs_parts.append(module.standardise(x, y)[0])
        step += 1
    xs = torch.cat(xs_parts, dim=1)
    for layer in range(module.n_layers):
        rows = xs[layer, torch.randperm(xs.shape[1], generator=generator)[:F]]
        module.W_enc[layer].copy_(rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-6))


def _autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16)


def _check_resumable(saved: Any, config: TrainConfig, step: int, where: Path) -> None:
    """Refuse to resume with any field changed but those in ``RESUME_MUTABLE_FIELDS``, naming them."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: checkpoint state has no 'config' mapping")
    now = config.to_dict()
    defaults = TrainConfig().to_dict()
    # A field newer than the checkpoint counts as unchanged when it is at its default (the old behaviour).
    changed = [f for f in now if f not in RESUME_MUTABLE_FIELDS and saved.get(f, defaults[f]) != now[f]]
    changed += sorted(f for f in saved if f not in now)
    if changed:
        kind = "structure" if any(f in STRUCTURAL_FIELDS for f in changed) else "schedule or data"
        details = ", ".join(f"{f}: checkpoint {saved.get(f)!r} vs now {now.get(f)!r}" for f in changed)
        raise InvalidArgumentError(
            f"cannot resume from {where}: the checkpoint was trained with a different {kind} ({details}); "
            f"only {', '.join(RESUME_MUTABLE_FIELDS)} may change on --resume. Resume with the original "
            "settings, or train into a new directory"
        )
    if step > config.total_steps:
        raise CheckpointError(
            f"{where}: checkpoint is at step {step}, beyond this run's {config.total_steps} steps"
        )


def _check_checkpoint_tensors(
    tensors: dict[str, Tensor], module: TrainableTranscoders, names: list[str], where: Path
) -> None:
    """The checkpoint holds exactly this module's tensors, with its shapes, and Adam moments to match."""
    expected = {f"module.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
    for name, param in zip(names, module.parameters(), strict=True):
        for moment in ("exp_avg", "exp_avg_sq"):
            key = f"adam.{name}.{moment}"
            if key in tensors:
                expected[key] = tuple(param.shape)
    expected["fire_ema"] = expected["last_fired"] = (module.n_layers, module.n_features)
    missing = sorted(k for k in expected if k.startswith("module.") and k not in tensors)
    missing += [k for k in ("fire_ema", "last_fired") if k not in tensors]
    if missing:
        raise CheckpointError(f"{where}: checkpoint lacks tensor(s) {', '.join(missing[:8])}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}; this run expects {shape}"
            )


@torch.no_grad()
def evaluate_module(module: TrainableTranscoders, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Per-layer FVU and L0 of ``module`` on raw activations ``x``, ``y`` (``[L, N, d]``)."""
    was_training = module.training
    module.eval()
    xs, ys = module.standardise(x, y)
    recon, acts, _ = module(xs)
    module.train(was_training)
    fvu = layer_fvu(recon, ys)
    l0 = layer_l0(acts)
    return {
        "nmse_per_layer": [round(float(v), 6) for v in fvu],
        "l0_per_layer": [round(float(v), 3) for v in l0],
        "nmse_mean": float(fvu.mean()),
        "l0_mean": float(l0.mean()),
        "n_tokens": int(x.shape[1]),
    }


@use_thread_policy("training")
def train_transcoders(
    config: TrainConfig,
    source: ActivationSource,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    model_name: str | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    time_limit_s: float | None = None,
    finish_at_time_limit: bool = False,
) -> TrainResult:
    """Train a transcoder set on ``source`` and write it (and curves, report, checkpoints) to ``out_dir``.

    With ``resume`` the run continues from ``out_dir/checkpoints`` if there is a checkpoint.
    ``time_limit_s`` stops the run cleanly (checkpoint written, nothing exported, ``report["stopped_at"]``
    set) once that much wall time has passed, so long recipes can run in chunks with ``resume``;
    with ``finish_at_time_limit`` it instead exports and evaluates what it has (a fixed time budget,
    as ``tracewire demo`` needs whatever the machine's speed).
    ``on_step(step)`` is called after every completed step (tests use it to kill the process).
    Under ``torchrun`` each rank trains on its share of every batch; rank 0 writes the files.
    """
    wall_start = time.perf_counter()
    rank, world = distributed.setup()
    out = Path(out_dir).expanduser()
    ckpt_dir = out / CHECKPOINT_DIR
    if not resume and (out / "config.yaml").exists():  # checked on every rank, so all of them stop
        raise InvalidArgumentError(
            f"{out} already holds a transcoder set (config.yaml); train into a new directory, "
            "or pass resume=True (--resume) to continue the run that wrote it"
        )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    module = TrainableTranscoders(config, source.n_layers, source.d_model, generator)
    device = distributed.device()
    module.train()
    param_names = [name for name, _ in module.named_parameters()]
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    L, F = source.n_layers, config.features
    fire_ema = torch.zeros(L, F)  # firing rate per feature, EMA over steps
    last_fired = torch.full((L, F), -1, dtype=torch.int64)  # last step in which each feature fired
    window = config.dead_window_steps
    curves: list[dict[str, Any]] = []
    start_step = 0
    elapsed = {"activations": 0.0, "train": 0.0}
    checkpoint = load_checkpoint(ckpt_dir) if resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint.state.get("config"), config, checkpoint.step, ckpt_dir)
        _check_checkpoint_tensors(checkpoint.tensors, module, param_names, ckpt_dir)
        module.load_state_dict(
            {k[len("module.") :]: v for k, v in checkpoint.tensors.items() if k.startswith("module.")}
        )
        load_optimizer_tensors(optimizer, param_names, checkpoint.tensors)
        fire_ema = checkpoint.tensors["fire_ema"].clone()
        last_fired = checkpoint.tensors["last_fired"].clone()
        restore_rng(checkpoint.tensors)
        start_step = checkpoint.step
        curves = list(checkpoint.state.get("curves", []))
        elapsed = dict(checkpoint.state.get("elapsed", elapsed))
        log.info("resuming from step %d of %d (%s)", start_step, config.total_steps, ckpt_dir)
    else:
        if resume:
            log.info("no checkpoint in %s: starting from scratch", ckpt_dir)
        t0 = time.perf_counter()
        fit_skip = config.has_skip and config.skip_init == "lstsq"
        moments, skip = estimate_statistics(source, config.stats_batches, rank, world, fit_skip=fit_skip)
        module.set_standardisation(*moments)
        if skip is not None and module.W_skip is not None:
            with torch.no_grad():
                module.W_skip.copy_(skip)
        if config.encoder_init == "data":
            init_encoder_from_data(module, source, generator)
        elapsed["activations"] += time.perf_counter() - t0

    module.to(device)
    if checkpoint is not None:  # Adam moments were read on the CPU
        for state in optimizer.state.values():
            for key, value in state.items():
                if key != "step":
                    state[key] = value.to(device)
    total = config.total_steps

    def save(step: int) -> None:
        if rank == 0:
            tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
            tensors.update(optimizer_tensors(optimizer, param_names))
            tensors.update(rng_tensors())
            tensors["fire_ema"] = fire_ema
            tensors["last_fired"] = last_fired
            state = {
                "config": config.to_dict(),
                "next_step": step,
                "tokens_seen": step * config.tokens_per_step,
                "curves": curves,
                "elapsed": elapsed,
                "world_size": world,
            }
            save_checkpoint(ckpt_dir, step, tensors, state)
        distributed.barrier(world)

    bar = tqdm(total=total, initial=start_step, desc="train transcoders", unit="step",
               disable=(rank != 0 or not progress) or None)  # fmt: skip
    for step in range(start_step, total):
        refresh_threads()
        t0 = time.perf_counter()
        x, y = (t.to(device) for t in source.batch(step, rank, world))
        t1 = time.perf_counter()
        xs, ys = module.standardise(x, y)
        time_frac = 0.0
        if time_limit_s and finish_at_time_limit:  # a fixed time budget: schedules follow the clock too
            used = torch.tensor([(time.perf_counter() - wall_start) / time_limit_s])
            time_frac = float(distributed.average_(used, world))
        coef = sparsity_coefficient(config, step, total, time_frac)
        lr = learning_rate(config, step, total, time_frac)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(config.autocast):
            recon, acts, pre = module(xs)
            terms = compute_losses(module, recon, ys, acts, pre, coef)
            if config.auxk:
                dead = _dead(last_fired, step, window).to(pre.device)
                terms.auxk = auxk_loss(module, recon, ys, pre, dead)
                if terms.auxk is not None:
                    terms.total = terms.total + config.auxk_coef * terms.auxk
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        distributed.average_gradients(module, world)
        grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            if config.activation == "batchtopk":
                distributed.average_(module.batchtopk_threshold, world)
            fired = distributed.average_((acts != 0).float().mean(1), world).cpu()
            fire_ema.mul_(config.ema_decay).add_((1 - config.ema_decay) * fired)
            last_fired[fired > 0] = step
        t2 = time.perf_counter()
        elapsed["activations"] += t1 - t0
        elapsed["train"] += t2 - t1
        done = step + 1
        if done % config.log_every == 0 or done == total:
            stats = torch.stack([
                terms.total.detach().float(), terms.mse.detach().float(),
                layer_fvu(recon, ys).mean(), layer_l0(acts).mean(),
            ])  # fmt: skip
            stats = distributed.average_(stats, world)
            record = {
                "step": done,
                "tokens": done * config.tokens_per_step,
                "loss": float(stats[0]),
                "mse": float(stats[1]),
                "nmse": float(stats[2]),
                "l0": float(stats[3]),
                "dead_frac": float(_dead(last_fired, done, window).float().mean()),
                "sparsity": float(terms.sparsity.detach()),
                "auxk": float(terms.auxk.detach()) if terms.auxk is not None else None,
                "sparsity_coef": coef,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "seconds": round(elapsed["activations"] + elapsed["train"], 3),
            }
            curves.append(record)
            bar.set_postfix(
                loss=f"{record['loss']:.4f}", nmse=f"{record['nmse']:.3f}", l0=f"{record['l0']:.1f}"
            )
        bar.update(1)
        if done % config.checkpoint_every == 0 or done == total:
            save(done)
            if rank == 0 and curves:
                last = curves[-1]
                log.info("step %d/%d: loss %.4f, NMSE %.3f, L0 %.1f, dead %.3f, %.0f tokens/s", done, total,
                         last["loss"], last["nmse"], last["l0"], last["dead_frac"],
                         done * config.tokens_per_step / max(1e-9, sum(elapsed.values())))  # fmt: skip
        if on_step is not None:
            on_step(done)
        if time_limit_s is not None and done < total and time.perf_counter() - wall_start > time_limit_s:
            limit_hit = torch.tensor([1.0])
        else:
            limit_hit = torch.tensor([0.0])
        if float(distributed.sum_(limit_hit, world)) > 0:  # every rank stops at the same step
            if finish_at_time_limit:
                save(done)
                log.info("time limit reached after step %d of %d: exporting what was trained", done, total)
                bar.close()
                return _finish(
                    config,
                    source,
                    module,
                    (last_fired, fire_ema),
                    curves,
                    elapsed,
                    out,
                    rank,
                    world,
                    model_name,
                    done,
                )
            if done % config.checkpoint_every:
                save(done)
            bar.close()
            log.info(
                "time limit reached: stopped after step %d of %d; continue with resume=True", done, total
            )
            report = {"stopped_at": done, "steps": total, "config": config.to_dict()}
            return TrainResult(module.export(model_name=model_name), module, report, curves, out)
    bar.close()
    return _finish(
        config, source, module, (last_fired, fire_ema), curves, elapsed, out, rank, world, model_name, total
    )


def _finish(
    config: TrainConfig,
    source: ActivationSource,
    module: TrainableTranscoders,
    firing: tuple[Tensor, Tensor],
    curves: list[dict[str, Any]],
    elapsed: dict[str, float],
    out: Path,
    rank: int,
    world: int,
    model_name: str | None,
    steps_done: int,
) -> TrainResult:
    transcoders = module.export(model_name=model_name)
    report: dict[str, Any] = {
        "model": model_name,
        "config": config.to_dict(),
        "world_size": world,
        "steps": steps_done,
        "planned_steps": config.total_steps,
        "tokens": steps_done * config.tokens_per_step,
        "seconds": {k: round(v, 2) for k, v in elapsed.items()},
    }
    train_seconds = sum(elapsed.values())
    report["tokens_per_second"] = round(report["tokens"] / train_seconds, 1) if train_seconds > 0 else None
    if rank == 0:
        device = module.b_dec.device
        x, y = (t.to(device) for t in source.eval_batch())
        report["eval"] = evaluate_module(module, x, y)
        last_fired, fire_ema = firing
        dead = _dead(last_fired, steps_done, config.dead_window_steps).float().mean(1)
        report["eval"]["firing_rate_mean"] = float(fire_ema.mean())
        report["eval"]["dead_frac_per_layer"] = [round(float(v), 4) for v in dead]
        report["eval"]["dead_frac_mean"] = float(dead.mean())
        save_transcoders(transcoders, out)
        write_curves(out, curves, title=f"{config.kind} / {config.activation} / {config.features} features")
        atomic_write_bytes(out / REPORT, json.dumps(report, indent=1).encode("utf-8"))
        ev = report["eval"]
        log.info("trained %s: eval NMSE %.4f, L0 %.1f, dead %.3f -> %s", config.kind,
                 ev["nmse_mean"], ev["l0_mean"], ev["dead_frac_mean"], out)  # fmt: skip
    distributed.barrier(world)
    return TrainResult(transcoders=transcoders, module=module, report=report, curves=curves, out_dir=out)

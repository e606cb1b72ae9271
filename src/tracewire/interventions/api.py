"""``intervene`` and ``generate``: change transcoder features and watch the model.

Researchers test an attribution graph by turning its features off or up: "suppress the Texas
feature and Austin drops; inject California and Sacramento appears". An intervention adds
``(new − old) · W_dec`` at the MLP output site of every layer the feature decodes to (one for a
per-layer transcoder, all later layers for a CLT). Three switches say how far its effect may
travel (semantics in ``intervened_pass``):

- ``freeze_attention`` (default on): attention patterns stay those of the clean run;
- ``constrained_layers``: features in these layers keep their clean activations (errors are
  always held fixed), so only *direct* effects propagate through them; with every layer
  constrained (and norms frozen, the default then) the model is exactly the linear local
  replacement model, where an ablation moves each target by minus its graph edge;
- ``freeze_norms``: norm denominators stay those of the clean run (default: only when every
  layer is constrained, as in circuit-tracer).

:class:`Intervener` keeps the clean run of a prompt so that many interventions on it cost one
forward each; :func:`intervene` and :func:`generate` are its one-shot forms.

Interventions are the independent check of attribution (the faithfulness harness compares the
two), so they share with ``tracewire.replacement`` only *where* the model is touched (the wiring of
``tracewire.models.hooks``), never *what is computed* there: the clean pattern is applied by the
model's own attention function fed the clean queries and keys (not the replacement model's
frozen-pattern autograd function), a frozen norm is ``y + lin(x') − lin(x)`` around the clean
output, and an output site is the clean output plus decoder writes rather than ``skip + constant``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.interventions.clean_run import CleanRun, Recorder
from tracewire.interventions.intervened_pass import InterventionPass, Propagation, Settings
from tracewire.interventions.spec import InterventionLike, as_interventions, check_interventions
from tracewire.models.hooks import Wiring
from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import TranscoderSet

if TYPE_CHECKING:
    from tracewire.replacement.model import ReplacementModel

Prompt = str | Sequence[int] | torch.Tensor


@dataclass
class InterventionResult:
    """One intervened forward of a prompt.

    ``logits``: ``[n_pos, vocab]``; ``activations``: ``[n_layers, n_pos, d_transcoder]`` after the
    interventions (``None`` if not kept); ``inputs[l]``: the transcoder input of layer ``l``
    ``[n_pos, d_model]``; ``final_residual``: the final-norm output ``[n_pos, d_model]`` (what graph
    targets read, before any logit softcap).
    """

    logits: torch.Tensor
    activations: torch.Tensor | None
    inputs: dict[int, torch.Tensor]
    final_residual: torch.Tensor


@dataclass
class Generation:
    """A generated continuation: ``tokens`` (new ids only), their ``text``, and the ``logits``
    ``[n_new, vocab]`` each was drawn from."""

    prompt_tokens: torch.Tensor
    tokens: torch.Tensor
    text: str
    logits: torch.Tensor


class Intervener:
    """A model and its transcoders, ready to run interventions (see the module docstring)."""

    def __init__(
        self, model: LoadedModel | ReplacementModel, transcoders: TranscoderSet | None = None
    ) -> None:
        loaded, transcoders = _unpack(model, transcoders)
        self.loaded = loaded
        self.transcoders = transcoders
        self.wiring = Wiring.for_transcoders(loaded, transcoders)

    @property
    def n_layers(self) -> int:
        return self.loaded.n_layers

    # -- clean run ---------------------------------------------------------------------------------
    @torch.no_grad()
    def clean(self, prompt: Prompt, *, prepend_bos: bool = True) -> CleanRun:
        """The clean forward of ``prompt`` (a string or token ids; BOS prepended once by default)."""
        tokens = self.loaded.encode(prompt, prepend_bos=prepend_bos)
        run = CleanRun(tokens=tokens)
        recorder = Recorder(run, self.transcoders, self.loaded.adapter)
        out = self.wiring.run(recorder, tokens[None])
        assert out is not None  # the recorder never stops a forward
        run.logits = out.logits[0]
        missing = [
            layer for layer in range(self.n_layers) if layer not in run.outputs or layer not in run.inputs
        ]
        if missing:
            raise RuntimeError(f"the clean run never reached the transcoder sites of layers {missing}")
        return run

    # -- interventions -----------------------------------------------------------------------------
    def run(
        self,
        clean: CleanRun,
        interventions: Iterable[InterventionLike] = (),
        *,
        freeze_attention: bool = True,
        constrained_layers: Iterable[int] | None = None,
        freeze_norms: bool | None = None,
        propagate: Propagation = "transcoders",
        keep_activations: bool = True,
    ) -> InterventionResult:
        """One intervened forward of the clean run's prompt."""
        return self.run_batch(
            clean,
            [interventions],
            freeze_attention=freeze_attention,
            constrained_layers=constrained_layers,
            freeze_norms=freeze_norms,
            propagate=propagate,
            keep_activations=keep_activations,
        )[0]

    @torch.no_grad()
    def run_batch(
        self,
        clean: CleanRun,
        batches: Sequence[Iterable[InterventionLike]],
        *,
        freeze_attention: bool = True,
        constrained_layers: Iterable[int] | None = None,
        freeze_norms: bool | None = None,
        propagate: Propagation = "transcoders",
        keep_activations: bool = True,
    ) -> list[InterventionResult]:
        """One forward of a batch of copies of the prompt, copy ``b`` with ``batches[b]`` applied.

        Much cheaper than one :meth:`run` per set where the forward is bound by reading weights
        (CPU, small prompts); results agree with :meth:`run` up to float rounding.
        """
        sets = [as_interventions(items) for items in batches]
        if not sets:
            return []
        for items in sets:
            check_interventions(
                items,
                n_layers=self.n_layers,
                d_transcoder=self.transcoders.d_transcoder,
                n_positions=clean.n_pos,
                n_prompt=clean.n_pos,
            )
        settings = self.settings(freeze_attention, constrained_layers, freeze_norms, propagate)
        session = InterventionPass(
            clean, self.transcoders, self.loaded.adapter, sets, settings, keep_activations=keep_activations
        )
        out = self.wiring.run(session, clean.tokens[None].expand(len(sets), -1))
        assert out is not None  # an intervened pass never stops a forward
        record = session.record
        assert record.final_residual is not None
        results = []
        for b in range(len(sets)):
            activations = (
                torch.stack([record.activations[layer][b] for layer in range(self.n_layers)])
                if keep_activations
                else None
            )
            results.append(
                InterventionResult(
                    logits=out.logits[b],
                    activations=activations,
                    inputs={layer: x[b] for layer, x in record.inputs.items()},
                    final_residual=record.final_residual[b],
                )
            )
        return results

    @torch.no_grad()
    def generate(
        self,
        clean: CleanRun,
        interventions: Iterable[InterventionLike] = (),
        *,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        freeze_attention: bool = True,
        constrained_layers: Iterable[int] | None = None,
        freeze_norms: bool | None = None,
        propagate: Propagation = "transcoders",
    ) -> Generation:
        """Continue the clean run's prompt with Hugging Face ``generate`` (KV cache on).

        ``temperature=0`` is greedy; otherwise sampling with ``top_p``, reproducible with ``seed``
        (the global RNG is left untouched). The prompt pass applies every setting; generated
        tokens run the real model plus the decoder writes of the interventions whose positions
        reach them (open-ended slices such as ``slice(k, None)``).
        """
        if max_new_tokens < 1:
            raise InvalidArgumentError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p}")
        items = as_interventions(interventions)
        check_interventions(
            items,
            n_layers=self.n_layers,
            d_transcoder=self.transcoders.d_transcoder,
            n_positions=clean.n_pos + max_new_tokens,
            n_prompt=clean.n_pos,
        )
        settings = self.settings(freeze_attention, constrained_layers, freeze_norms, propagate)
        session = InterventionPass(
            clean, self.transcoders, self.loaded.adapter, [items], settings, keep_activations=False
        )
        config = self._generation_config(max_new_tokens, temperature, top_p)
        device = self.loaded.device
        ids = clean.tokens[None].to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            with self.wiring.active(session):
                out: Any = self.loaded.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                )
        new = out.sequences[0, clean.n_pos :].cpu()
        tokenizer = self.loaded.tokenizer
        text = tokenizer.decode(new.tolist()) if tokenizer is not None else " ".join(map(str, new.tolist()))
        logits = torch.stack([step[0] for step in out.logits]) if out.logits else torch.empty(0)
        return Generation(prompt_tokens=clean.tokens, tokens=new, text=text, logits=logits)

    # -- helpers -----------------------------------------------------------------------------------
    def settings(
        self,
        freeze_attention: bool,
        constrained_layers: Iterable[int] | None,
        freeze_norms: bool | None,
        propagate: Propagation,
    ) -> Settings:
        constrained = frozenset(int(layer) for layer in (constrained_layers or ()))
        bad = sorted(layer for layer in constrained if not 0 <= layer < self.n_layers)
        if bad:
            raise InvalidArgumentError(f"constrained_layers {bad} are outside 0..{self.n_layers - 1}")
        if freeze_norms is None:
            freeze_norms = len(constrained) == self.n_layers
        return Settings(
            freeze_attention=bool(freeze_attention),
            freeze_norms=bool(freeze_norms),
            constrained=constrained,
            propagate=propagate,
        )

    def _generation_config(self, max_new_tokens: int, temperature: float, top_p: float) -> Any:
        from transformers import GenerationConfig

        base = getattr(self.loaded.model, "generation_config", None)
        config = copy.deepcopy(base) if base is not None else GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.use_cache = True
        config.return_dict_in_generate = True
        config.output_logits = True
        if config.pad_token_id is None:
            eos = config.eos_token_id
            config.pad_token_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
        if temperature > 0:
            config.do_sample, config.temperature, config.top_p, config.top_k = True, temperature, top_p, 0
        else:
            config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
        return config


def _unpack(
    model: LoadedModel | ReplacementModel, transcoders: TranscoderSet | None
) -> tuple[LoadedModel, TranscoderSet]:
    """Accept a LoadedModel + transcoders, or a ReplacementModel (whose transcoders are used)."""
    from tracewire.replacement.model import ReplacementModel

    if isinstance(model, ReplacementModel):
        transcoders = transcoders if transcoders is not None else model.transcoders
        model = model.loaded
    if not isinstance(model, LoadedModel):
        raise TypeError(f"model must be a LoadedModel or ReplacementModel, got {type(model).__name__}")
    if transcoders is None:
        raise InvalidArgumentError("interventions need transcoders: pass transcoders=... (a TranscoderSet)")
    return model, transcoders


def intervene(
    model: LoadedModel | ReplacementModel,
    transcoders: TranscoderSet | None,
    prompt: Prompt,
    interventions: Iterable[InterventionLike],
    *,
    freeze_attention: bool = True,
    constrained_layers: Iterable[int] | None = None,
    freeze_norms: bool | None = None,
    propagate: Propagation = "transcoders",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[n_pos, vocab]`` and feature activations ``[n_layers, n_pos, d_transcoder]`` of
    ``prompt`` with ``interventions`` applied (see the module docstring for the switches)."""
    engine = Intervener(model, transcoders)
    result = engine.run(
        engine.clean(prompt),
        interventions,
        freeze_attention=freeze_attention,
        constrained_layers=constrained_layers,
        freeze_norms=freeze_norms,
        propagate=propagate,
    )
    assert result.activations is not None
    return result.logits, result.activations


def generate(
    model: LoadedModel | ReplacementModel,
    transcoders: TranscoderSet | None,
    prompt: Prompt,
    interventions: Iterable[InterventionLike] = (),
    *,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    freeze_attention: bool = True,
    constrained_layers: Iterable[int] | None = None,
    freeze_norms: bool | None = None,
    propagate: Propagation = "transcoders",
) -> Generation:
    """Generate a continuation of ``prompt`` with ``interventions`` applied (see
    :meth:`Intervener.generate`)."""
    engine = Intervener(model, transcoders)
    return engine.generate(
        engine.clean(prompt),
        interventions,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        freeze_attention=freeze_attention,
        constrained_layers=constrained_layers,
        freeze_norms=freeze_norms,
        propagate=propagate,
    )

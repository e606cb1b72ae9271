"""Steering from the graph: feature interventions on a graph's prompt, top logits and text before/after.

The model and transcoders are loaded once when the server starts (``--model`` / ``--transcoders``)
and wrapped in an :class:`~tracewire.interventions.Intervener`. Model calls are not re-entrant
(the intervention wiring is process state), so they run on ONE worker thread, one request after
another. The clean run of a prompt is cached, so repeated steering of one graph costs one
intervened forward (plus generation, when asked).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.interventions.api import Intervener
from tracewire.interventions.clean_run import CleanRun
from tracewire.interventions.spec import Intervention
from tracewire.server.schemas import SteerIntervention
from tracewire.server.serial_worker import SerialWorker

_CLEAN_RUNS_KEPT = 8
T = TypeVar("T")


class SteeringError(InvalidArgumentError):
    """The request cannot be run on this model (a 422 for the client)."""


class Steerer:
    """Runs :class:`SteerIntervention` lists on token prompts (see the module docstring)."""

    def __init__(self, intervener: Intervener) -> None:
        self.intervener = intervener
        self._worker = SerialWorker("steer")
        self._clean: OrderedDict[tuple[int, ...], CleanRun] = OrderedDict()

    async def steer(
        self,
        tokens: Sequence[int],
        interventions: Sequence[SteerIntervention],
        *,
        top_k: int,
        max_new_tokens: int,
        freeze_attention: bool,
    ) -> dict[str, Any]:
        items = list(interventions)
        return await self._worker.run(
            lambda: self._steer(tuple(tokens), items, top_k, max_new_tokens, freeze_attention)
        )

    async def run_on_model_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread, never alongside steering (used by attention routes)."""
        return await self._worker.run(fn)

    def close(self) -> None:
        self._worker.close()

    # -- on the worker thread ---------------------------------------------------------------
    def _steer(
        self,
        tokens: tuple[int, ...],
        requested: list[SteerIntervention],
        top_k: int,
        max_new_tokens: int,
        freeze_attention: bool,
    ) -> dict[str, Any]:
        loaded = self.intervener.loaded
        if not tokens or min(tokens) < 0 or max(tokens) >= loaded.vocab_size:
            raise SteeringError(
                f"the graph's token ids do not fit model {loaded.name!r} (vocabulary {loaded.vocab_size}); "
                "steer with the model the graph was made with"
            )
        items = [_intervention(item) for item in requested]
        clean = self._clean_run(tokens)
        try:
            result = self.intervener.run(
                clean, items, freeze_attention=freeze_attention, keep_activations=False
            )
            before_text = after_text = None
            if max_new_tokens:
                before_text = self.intervener.generate(clean, [], max_new_tokens=max_new_tokens).text
                after_text = self.intervener.generate(
                    clean, items, max_new_tokens=max_new_tokens, freeze_attention=freeze_attention
                ).text
        except (ValueError, IndexError) as exc:  # out-of-range layer / feature / position
            raise SteeringError(str(exc)) from exc
        return {
            "prompt_tokens": loaded.token_strings(list(tokens)),
            "before": {"top_logits": self._top(clean.logits[-1], top_k), "text": before_text},
            "after": {"top_logits": self._top(result.logits[-1], top_k), "text": after_text},
            "interventions": [item.describe() for item in items],
        }

    def _clean_run(self, tokens: tuple[int, ...]) -> CleanRun:
        run = self._clean.get(tokens)
        if run is None:
            run = self.intervener.clean(torch.tensor(tokens, dtype=torch.long), prepend_bos=False)
            self._clean[tokens] = run
            while len(self._clean) > _CLEAN_RUNS_KEPT:
                self._clean.popitem(last=False)
        self._clean.move_to_end(tokens)
        return run

    def _top(self, logits: torch.Tensor, k: int) -> list[dict[str, Any]]:
        values = logits.detach().float().cpu()
        probabilities = torch.softmax(values, dim=-1)
        top = torch.topk(probabilities, min(k, int(values.shape[0])))
        ids = top.indices.tolist()
        strings = self.intervener.loaded.token_strings(ids)
        return [
            {"token_id": i, "token": s, "probability": float(p), "logit": float(values[i])}
            for i, s, p in zip(ids, strings, top.values.tolist())
        ]


def _intervention(item: SteerIntervention) -> Intervention:
    position: int | slice = slice(None) if item.position == "all" else int(item.position)
    return Intervention(item.layer, position, item.feature, item.op, float(item.value))

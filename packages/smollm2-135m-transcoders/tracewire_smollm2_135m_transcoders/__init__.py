"""tracewire's transcoder set for SmolLM2-135M-Instruct, as data: this folder *is* the set.

``config.yaml`` and ``layer_<i>.safetensors`` follow circuit-tracer's layout, so the folder loads
in tracewire (``load_transcoders("smollm2-135m")`` or ``--transcoders smollm2-135m``) and, unchanged,
in circuit-tracer (``load_transcoder_from_hub(<this folder>)``). README.md is the model card.
"""

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
"""The folder holding config.yaml and the layer files."""

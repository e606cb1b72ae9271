"""``tracewire serve DIR``: the graph explorer for the graphs of a directory, in a local browser UI.

Binds 127.0.0.1 unless ``--host`` says otherwise: the server can write graph files (saved
qParams) and labels, so it is not offered to the network by accident. Optional parts load at
start-up: ``--features`` (feature cards and labels) and ``--model`` + ``--transcoders`` (steering).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tracewire.cli.common import fail_cleanly, parse_dtype

if TYPE_CHECKING:
    from tracewire.server.steering import Steerer

logger = logging.getLogger(__name__)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@fail_cleanly
def serve_command(
    directory: Annotated[
        Path, typer.Argument(help="Folder with graphs (.safetensors, Neuronpedia .json / .json.gz).")
    ],
    host: Annotated[str, typer.Option("--host", help="Interface to bind (default: loopback only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8046,
    features: Annotated[
        Path | None, typer.Option("--features", help="Feature store (features.sqlite) for cards and labels.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model for steering and attribution from the page (alias, folder, .gguf, hub id).",
        ),
    ] = None,
    transcoders: Annotated[
        str | None,
        typer.Option("--transcoders", "-t", help="Transcoders for steering and attribution (with --model)."),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Never write: refuse saving qParams and labels.")
    ] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Steering model dtype: fp32 or bf16.")] = "fp32",
    device: Annotated[str, typer.Option("--device", help="Steering model device.")] = "cpu",
) -> None:
    """Serve the graph explorer UI and its JSON API (docs at /api/docs) for the graphs in DIRECTORY."""
    import uvicorn

    from tracewire.server import FeatureService, create_app, open_feature_store
    from tracewire.server.attribution_jobs import AttributionJobs, AttributionSettings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="DIRECTORY")
    if transcoders is not None and model is None:
        raise typer.BadParameter("--transcoders needs --model (steering and attribution run that model)")
    if model is not None:
        from tracewire.cli.common import transcoders_or_default

        transcoders = transcoders_or_default(transcoders, model)
    feature_service = None
    if features is not None:
        if not features.is_file():
            raise typer.BadParameter(f"{features} does not exist", param_hint="--features")
        feature_service = FeatureService(
            open_feature_store(str(features), readonly=read_only), writable=not read_only
        )
    steerer = _steerer(model, transcoders, dtype, device) if model and transcoders else None
    attribution = (
        AttributionJobs(AttributionSettings(model, transcoders, dtype=dtype, device=device))
        if model and transcoders and not read_only
        else None
    )
    public = host not in _LOOPBACK
    if public:
        logger.warning("binding %s: the explorer is reachable from the network (it can write files)", host)
    app = create_app(
        directory,
        features=feature_service,
        steerer=steerer,
        attribution=attribution,
        read_only=read_only,
        allowed_hosts=None if public else ("127.0.0.1", "localhost", "[::1]"),
    )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"tracewire explorer: http://{shown}:{port}/  (API: http://{shown}:{port}/api/docs)")
    from tracewire.server import serving  # limits: head timeout, connections, log budget

    serving.raise_open_file_limit()
    uvicorn.Server(serving.server_config(app, host=host, port=port)).run()


def _steerer(model: str, transcoders: str, dtype: str, device: str) -> Steerer:
    from tracewire.interventions.api import Intervener
    from tracewire.models.loading import load_model
    from tracewire.server import Steerer
    from tracewire.transcoders.io import load_transcoders

    torch_dtype = parse_dtype(dtype)
    typer.echo(f"loading {model} and {transcoders} for steering ...")
    loaded = load_model(model, dtype=torch_dtype, device=device)
    ts = load_transcoders(
        transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model, device=device, dtype=torch_dtype
    )
    return Steerer(Intervener(loaded, ts))

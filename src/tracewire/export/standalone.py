"""One self-contained HTML file of a graph: the explorer, the pruned graph and its feature cards.

The file is for sharing (an e-mail attachment, a paper's supplement): it opens from disk
(``file://``) with no server and no network. It is built from the real pieces, not a copy of them:

1. the graph is served, in-process, by the explorer app of ``tracewire serve`` (read-only), and
   the answers to the requests the explorer makes (info, list, nodes, links, one card per feature
   node) are recorded;
2. the explorer's static files are read from the installed package at export time; its ES modules
   are inlined as ``data:`` URLs behind an import map (each relative import rewritten to the
   map's key), and its stylesheet as a ``<style>``;
3. ``offline_api.js`` replaces ``window.fetch`` and answers the explorer from the recorded data
   (gzip + base64, decompressed by the browser's ``DecompressionStream``).

A Content-Security-Policy in the page allows only inline and ``data:`` sources, so the browser
itself guarantees that no request leaves the file. Pruning is chosen to keep the file under a
size budget: the server's default thresholds first, then lower node thresholds until it fits.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gzip
import importlib.resources
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tracewire.atomic import atomic_write_text
from tracewire.errors import GraphFormatError, InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.server.app import create_app
from tracewire.server.feature_service import FeatureService, FeatureSource, open_feature_store
from tracewire.server.graph_files import SLUG_PATTERN, SUFFIXES
from tracewire.server.graph_store import DEFAULT_EDGE_THRESHOLD
from tracewire.server.ui_routes import static_files

logger = logging.getLogger(__name__)

#: The size the issue asks for: a 2k-node graph with its cards in under 5 MB.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: Node thresholds tried, in order, when the file would exceed its size budget.
FALLBACK_NODE_THRESHOLDS = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
#: What a card keeps (a shared file holds hundreds of cards; these keep ~2 KB each after gzip):
#: the explorer shows 8 top activations, then each quantile group folded; windows are cut around
#: the example's centre token and activations rounded to 3 significant digits.
CARD_TOP_EXAMPLES = 8
CARD_GROUP_EXAMPLES = 3
CARD_WINDOW_BEFORE = 10
CARD_WINDOW_AFTER = 5
CARD_LOGITS = 8
MODULE_PREFIX = "tracewire-explorer/"
_DEFAULT_SLUG = "graph"
_RELATIVE_IMPORT = re.compile(r"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])(\.{1,2}/[^"']+)\2""")
_STYLESHEET = re.compile(r"""<link\s+rel="stylesheet"\s+href="/static/([^"]+)"\s*/?>""")
_MODULE_SCRIPT = re.compile(r"""<script\s+type="module"\s+src="/static/([^"]+)"\s*>\s*</script>""")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' data:; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'"
)
#: Controls that need a server (download, API docs, saving into the file) are hidden.
_HIDDEN_CONTROLS = (
    "#download-link, #save-button, #edge-threshold-label, a[href='/api/docs'] {display: none !important}"
)
#: (pattern of "METHOD /path", status, message) for what a standalone file cannot answer.
_UNAVAILABLE: list[tuple[str, int, str]] = [
    (
        r"^POST /api/graphs/[^/]+/subgraph-scores$",
        501,
        "subgraph scores are computed by the server: open the graph with `tracewire serve` to see them",
    ),
    (
        r"^POST /api/graphs/[^/]+/qparams$",
        403,
        "a standalone file is read-only: pins and groups live in this page",
    ),
    (r"^PUT /api/features/", 403, "a standalone file is read-only: labels cannot be saved"),
    (
        r"^POST /api/steer$",
        501,
        "steering needs a model: use `tracewire serve DIR --model M --transcoders T`",
    ),
    (
        r"^\w+ /api/attribution/",
        501,
        "attributing new prompts needs a model: use `tracewire serve -m M -t T`",
    ),
    (
        r"^\w+ /api/graphs/[^/]+/(heads|qk)",
        501,
        "attention views need the graph's tensors: use `tracewire serve`",
    ),
    (
        r"^GET /api/search",
        501,
        "feature search needs the feature store: use `tracewire serve DIR --features F`",
    ),
    (
        r"^GET /api/features/",
        404,
        "this feature's card is not in the file (it was exported without a feature store)",
    ),
]


@dataclass(frozen=True)
class StandaloneExport:
    """What :func:`export_html` wrote."""

    path: Path
    n_bytes: int
    n_nodes: int
    n_links: int
    n_cards: int
    node_threshold: float | None
    edge_threshold: float | None

    def summary(self) -> str:
        pruning = "" if self.node_threshold is None else f", node threshold {self.node_threshold:g}"
        pruning += "" if self.edge_threshold is None else f", edge threshold {self.edge_threshold:g}"
        return (
            f"wrote {self.path}: {self.n_bytes / 1e6:.2f} MB ({self.n_nodes} nodes, {self.n_links} links, "
            f"{self.n_cards} feature cards{pruning})"
        )


def export_html(
    graph: Graph | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    features: FeatureSource | str | os.PathLike[str] | None = None,
    node_threshold: float | None = None,
    edge_threshold: float | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    title: str | None = None,
) -> StandaloneExport:
    """Write ``graph`` (a Graph, a ``.safetensors`` graph or a Neuronpedia ``.json[.gz]``) as one HTML file.

    ``features``: a feature store (``features.sqlite`` path or a FeatureSource) whose cards of the
    graph's feature nodes are embedded. ``node_threshold`` / ``edge_threshold`` fix the pruning;
    when ``node_threshold`` is None, the first of :data:`FALLBACK_NODE_THRESHOLDS` whose file fits
    ``max_bytes`` is used (the last one is kept, with a warning, if none fits).
    """
    if max_bytes <= 0:
        raise InvalidArgumentError(f"max_bytes must be positive, got {max_bytes}")
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise InvalidArgumentError(f"{name} must be in [0, 1], got {value}")
    with tempfile.TemporaryDirectory(prefix="tracewire-export-") as staging:
        slug, kind = _stage(graph, Path(staging))
        if kind == "tracewire":
            edges: float | None = DEFAULT_EDGE_THRESHOLD if edge_threshold is None else edge_threshold
            nodes_tried: Sequence[float | None] = (
                (node_threshold,) if node_threshold is not None else FALLBACK_NODE_THRESHOLDS
            )
        else:  # a JSON graph: all its nodes unless asked, filtered on stored influence
            edges = None
            nodes_tried = (
                (node_threshold,) if node_threshold is not None else (None, *FALLBACK_NODE_THRESHOLDS)
            )
        service = feature_service(features, read_only=True)
        try:
            app = create_app(staging, features=service, read_only=True)
            for attempt, nodes in enumerate(nodes_tried):
                page, counts = _build_page(
                    app, slug, nodes, edges, has_cards=service is not None, title=title
                )
                size = len(page.encode())
                if size <= max_bytes or attempt == len(nodes_tried) - 1:
                    break
                logger.info(
                    "node threshold %s gives %.2f MB (> %.2f MB); pruning more",
                    nodes,
                    size / 1e6,
                    max_bytes / 1e6,
                )
        finally:
            if service is not None:
                service.close()
    if size > max_bytes:
        logger.warning(
            "%s: %.2f MB exceeds the %.2f MB budget even at node threshold %s; pass a lower --node-threshold",
            output, size / 1e6, max_bytes / 1e6, nodes,
        )  # fmt: skip
    path = atomic_write_text(output, page)
    result = StandaloneExport(path, size, *counts, node_threshold=nodes, edge_threshold=edges)
    logger.info("%s", result.summary())
    return result


# ------------------------------------------------------------------------------------ the graph


def _stage(graph: Graph | str | os.PathLike[str], directory: Path) -> tuple[str, str]:
    """Put the graph into ``directory`` as the one file the app serves; its slug and kind.

    The slug is the file's stem (what ``tracewire serve`` would call it), else ``graph``.
    """
    if isinstance(graph, Graph):
        graph.save(directory / f"{_DEFAULT_SLUG}.safetensors")
        return _DEFAULT_SLUG, "tracewire"
    source = Path(graph).expanduser()
    if not source.is_file():
        raise InvalidArgumentError(f"graph file {source} does not exist")
    for suffix, kind in SUFFIXES:
        if source.name.endswith(suffix) and not (suffix == ".json" and source.name.endswith(".json.gz")):
            stem = source.name[: -len(suffix)]
            slug = stem if re.match(SLUG_PATTERN, stem) else _DEFAULT_SLUG
            shutil.copyfile(source, directory / f"{slug}{suffix}")
            return slug, kind
    raise InvalidArgumentError(
        f"{source}: expected a graph file ending in {', '.join(s for s, _ in SUFFIXES)}"
    )


def feature_service(
    features: FeatureSource | str | os.PathLike[str] | None, *, read_only: bool
) -> FeatureService | None:
    """A FeatureService over ``features`` (a ``features.sqlite`` path or a FeatureSource), or None."""
    if features is None:
        return None
    if isinstance(features, (str, os.PathLike)):
        path = Path(features).expanduser()
        if not path.is_file():
            raise InvalidArgumentError(f"feature store {path} does not exist")
        return FeatureService(open_feature_store(str(path), readonly=read_only), writable=not read_only)
    source = features
    return FeatureService(lambda: source, writable=not read_only)


def _build_page(
    app: Any,
    slug: str,
    node_threshold: float | None,
    edge_threshold: float | None,
    *,
    has_cards: bool,
    title: str | None,
) -> tuple[str, tuple[int, int, int]]:
    """The HTML page for one pruning, and its (nodes, links, cards) counts."""
    # On a thread of its own: the caller may be inside an event loop (Jupyter, playwright).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracewire-export") as pool:
        record = _record(app, slug, node_threshold, edge_threshold, has_cards=has_cards)
        data = pool.submit(asyncio.run, record).result()
    head = data["responses"][f"/api/graphs/{slug}/nodes"]
    counts = (len(head["nodes"]), len(data["links"][slug]["source"]), data.pop("n_cards"))
    return _page(data, title or _title(head)), counts


async def _record(
    app: Any, slug: str, node_threshold: float | None, edge_threshold: float | None, *, has_cards: bool
) -> dict[str, Any]:
    """The server's answers to what the explorer asks for this graph."""
    query = urlencode(
        {
            k: v
            for k, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold))
            if v is not None
        }
    )
    base = f"/api/graphs/{slug}"
    responses = {
        "/api/info": await _get(app, "/api/info"),
        "/api/graphs": await _get(app, "/api/graphs"),
        f"{base}/nodes": await _get(app, f"{base}/nodes?{query}"),
    }
    links = await _all_links(app, f"{base}/links?{query}")
    n_cards = 0
    if has_cards:
        keys = sorted({key for node in responses[f"{base}/nodes"]["nodes"] if (key := _feature_key(node))})
        for layer, feature in keys:
            card = await _get(app, f"/api/features/{layer}/{feature}", missing_ok=True)
            if card is not None:
                responses[f"/api/features/{layer}/{feature}"] = _trim_card(card)
                n_cards += 1
    return {"responses": responses, "links": {slug: links}, "unavailable": _UNAVAILABLE, "n_cards": n_cards}


async def _all_links(app: Any, url: str) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"source": [], "target": [], "weight": []}
    while True:
        page = await _get(app, f"{url}&offset={len(columns['source'])}&limit=1000000")
        for name, values in columns.items():
            values.extend(page[name])
        if not page["source"] or len(columns["source"]) >= page["total"]:
            return columns


def _feature_key(node: dict[str, Any]) -> tuple[int, int] | None:
    """(layer, feature) of a feature node (id ``{layer}_{feature}_{pos}``), as the explorer reads it."""
    feature_type = str(node.get("feature_type", ""))
    if feature_type in {"embedding", "logit"} or "error" in feature_type:
        return None
    parts = str(node.get("node_id", "")).split("_")
    if len(parts) != 3 or not all(part.isdigit() for part in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


def _trim_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card as the server answered it, cut to what a shared file needs (see CARD_* above)."""
    trimmed = dict(card)
    if isinstance(trimmed.get("top_examples"), list):
        trimmed["top_examples"] = [_trim_example(e) for e in trimmed["top_examples"][:CARD_TOP_EXAMPLES]]
    for name in ("top_logits", "bottom_logits"):
        if isinstance(trimmed.get(name), list):
            trimmed[name] = trimmed[name][:CARD_LOGITS]
    groups = trimmed.get("examples_quantiles")
    if isinstance(groups, list):
        trimmed["examples_quantiles"] = [
            {**group, "examples": [_trim_example(e) for e in group["examples"][:limit]]}
            if isinstance(group, dict) and isinstance(group.get("examples"), list)
            else group
            for group, limit in zip(groups, [CARD_TOP_EXAMPLES] + [CARD_GROUP_EXAMPLES] * len(groups))
        ]
    return trimmed


def _trim_example(example: Any) -> Any:
    """One example window cut to CARD_WINDOW_BEFORE/AFTER tokens around its centre."""
    if not isinstance(example, dict) or not isinstance(example.get("tokens"), list):
        return example
    tokens, acts = example["tokens"], example.get("tokens_acts_list")
    centre = example.get("train_token_ind")
    centre = centre if isinstance(centre, int) and 0 <= centre < len(tokens) else len(tokens) // 2
    start, end = max(0, centre - CARD_WINDOW_BEFORE), centre + CARD_WINDOW_AFTER + 1
    out = {**example, "tokens": tokens[start:end], "train_token_ind": centre - start}
    if isinstance(acts, list):
        out["tokens_acts_list"] = [float(f"{a:.3g}") if isinstance(a, float) else a for a in acts[start:end]]
    return out


async def _get(app: Any, url: str, *, missing_ok: bool = False) -> Any:
    """GET ``url`` from the ASGI ``app`` in this process; the decoded JSON body."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
    }
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    if status == 404 and missing_ok:
        return None
    if status != 200:
        try:
            detail = json.loads(body).get("detail", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = body.decode(errors="replace")
        raise GraphFormatError(f"cannot export the graph: GET {url} answered {status}: {detail}")
    return json.loads(body)


# ------------------------------------------------------------------------------------- the page


def _title(head: dict[str, Any]) -> str:
    prompt = head.get("metadata", {}).get("prompt")
    return f"tracewire · {prompt}" if isinstance(prompt, str) and prompt else "tracewire · graph"


def _page(data: dict[str, Any], title: str) -> str:
    """index.html of the explorer with its CSS, modules, the offline API and the data inlined."""
    files = static_files()
    html = files["index.html"][0].decode()
    html = _STYLESHEET.sub(
        lambda m: f"<style>\n{_file_text(files, m.group(1))}\n{_HIDDEN_CONTROLS}\n</style>", html
    )
    entries = _MODULE_SCRIPT.findall(html)
    if not entries:
        raise GraphFormatError('the explorer\'s index.html has no <script type="module" src="/static/...">')
    import_map = {"imports": _module_urls(files)}
    payload = base64.b64encode(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), 9)).decode()
    shim = importlib.resources.files("tracewire.export").joinpath("offline_api.js").read_text()
    loader = (
        f'<script id="tracewire-offline-data" type="application/octet-stream">{payload}</script>\n'
        f"<script>\n{shim}</script>\n"
        f'<script type="importmap">{_script_json(import_map)}</script>\n'
    )
    # The import map must come before the first module script, so the loader takes its place.
    first = _MODULE_SCRIPT.search(html)
    assert first is not None
    html = html[: first.start()] + loader + html[first.start() :]
    html = _MODULE_SCRIPT.sub(
        lambda m: f'<script type="module">import "{MODULE_PREFIX}{m.group(1)}";</script>', html
    )
    html = re.sub(
        r"<title>.*?</title>", lambda _: f"<title>{_escape(title)}</title>", html, count=1, flags=re.S
    )
    csp = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
    return html.replace('<meta charset="utf-8">\n', '<meta charset="utf-8">\n' + csp, 1)


def _file_text(files: dict[str, tuple[bytes, str]], name: str) -> str:
    if name not in files:
        raise GraphFormatError(f"the explorer's index.html names /static/{name}, which the package lacks")
    return files[name][0].decode()


def _module_urls(files: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    """Every .js file of the explorer as a ``data:`` URL, its relative imports rewritten to map keys."""
    urls: dict[str, str] = {}
    for name in sorted(n for n in files if n.endswith(".js")):
        source = files[name][0].decode()

        def absolute(match: re.Match[str], name: str = name) -> str:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), match.group(3)))
            if target not in files:
                raise GraphFormatError(
                    f"explorer module {name} imports {match.group(3)}, which the package lacks"
                )
            return f"{match.group(1)}{match.group(2)}{MODULE_PREFIX}{target}{match.group(2)}"

        rewritten = _RELATIVE_IMPORT.sub(absolute, source)
        encoded = base64.b64encode(rewritten.encode()).decode()
        urls[f"{MODULE_PREFIX}{name}"] = f"data:text/javascript;base64,{encoded}"
    return urls


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can end it early)."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

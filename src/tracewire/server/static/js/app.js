// The explorer page: loads a graph (from the server or a file), keeps the user's state, and wires
// the canvas and the panels together. `window.tracewire` exposes the explorer and its timings for
// tests and for the curious (e.g. `tracewire.metrics.firstRenderMs`).

import { api } from "./api.js";
import { AttentionPanel } from "./attention_panel.js";
import { AttributePanel } from "./attribute.js";
import { debounce, el, replaceChildren } from "./dom.js";
import { FeatureCardPanel } from "./feature_card.js";
import { featureKey, KIND, loadServerGraph, readGraphFile } from "./graph_data.js";
import { NodePanel } from "./node_panel.js";
import { bindPanels } from "./panels.js";
import { Renderer } from "./renderer.js";
import { ExplorerState, urlStateParams } from "./state.js";
import { SearchBox } from "./search.js";
import { SteeringPanel } from "./steering.js";
import { SubgraphPanel } from "./subgraph.js";

const $ = (id) => document.getElementById(id);
const NOT_TYPED_IN = new Set(["range", "checkbox", "radio", "button", "submit", "reset", "file", "color"]);

/** Whether a key press goes to a text field (so p, g and Esc are not shortcuts there). */
function typingIn(target) {
  if (!(target instanceof Element)) return false;
  if (target.closest("textarea, select, [contenteditable]")) return true;
  return target.tagName === "INPUT" && !NOT_TYPED_IN.has(target.type);
}
// Beyond this many links a graph opens showing only the strongest DEFAULT_LINK_LIMIT (a wall of
// hundreds of thousands of overlapping lines shows nothing); the "links" menu changes it.
const DEFAULT_ALL_LINKS_UP_TO = 120000;
const DEFAULT_LINK_LIMIT = 20000;
// When no feature survives a graph's own pruning, the first view shows this many of its most
// influential features; a served graph without any is fetched once at LOOSE_PRUNING.
const DEFAULT_FEATURES_SHOWN = 10;
const LOOSE_PRUNING = 0.95;

class Explorer {
  constructor() {
    this.info = { features: false, labels_writable: false, steering: false, read_only: true };
    this.data = null;
    this.state = new ExplorerState();
    this.selected = -1;
    this.hovered = -1;
    this.metrics = { renders: 0 };
    this.scoreRequest = 0;
    this.grouping = null; // node ids clicked while g is held
    this.renderer = new Renderer({
      pane: $("graph-pane"), base: $("base-canvas"), overlay: $("overlay-canvas"), tooltip: $("tooltip"),
      onHover: (i) => { this.hovered = i; this.renderer.setFocus({ hovered: i }); },
      onClick: (i, event) => this.clickNode(i, event),
      onDrop: (dragged, target) => this.dropOn(dragged, target),
    });
    this.renderer.labelOf = (i) => this.data.label(i, this.state.nodeLabels);
    this.nodePanel = new NodePanel($("node-panel"), {
      onSelect: (i) => this.select(i),
      onTogglePin: (i) => this.state.togglePin(this.data.nodes[i].node_id),
      onSteer: (i) => this.steering.addNode(i),
    });
    this.attention = new AttentionPanel($("attention-panel"), {
      onSelect: (i) => this.select(i), setStatus: (text, error) => this.setStatus(text, error),
    });
    this.card = new FeatureCardPanel($("feature-card"), {
      setStatus: (text, error) => this.setStatus(text, error),
      onLabelSaved: (layer, feature, text) => {
        this.data.setFeatureLabel(layer, feature, text);
        if (this.selected >= 0) this.showNode(this.selected);
        this.subgraph.render(this.data);
      },
    });
    this.subgraph = new SubgraphPanel($("subgraph-panel"), {
      state: this.state, onSelect: (i) => this.select(i),
    });
    this.steering = new SteeringPanel($("steer-panel"), {
      setStatus: (text, error) => this.setStatus(text, error),
      selectedFeature: () => (this.selected >= 0 && this.data.nodeKind[this.selected] === KIND.FEATURE ? this.selected : -1),
      pinnedFeatures: () => this.state.pinned.map((id) => this.data.index.get(id)).filter((i) => i !== undefined && this.data.nodeKind[i] === KIND.FEATURE),
    });
    this.search = new SearchBox($("search"), $("search-results"), {
      onOpen: (slug, nodeId) => this.openNode(slug, nodeId),
      currentData: () => this.data,
      serverAvailable: () => this.serverUp,
    });
    this.attribution = new AttributePanel($("attribute-box"), {
      setStatus: (text, error) => this.setStatus(text, error),
      onDone: async (slug) => {
        await this.listGraphs();
        $("graph-select").value = slug;
        await this.openServerGraph(slug);
      },
    });
    this.requestScores = debounce(() => this.updateScores(), 120);
    this.bindControls();
    bindPanels($("layout"));
    window.tracewire = { explorer: this, metrics: this.metrics };
  }

  setStatus(text, error = false) {
    const status = $("status");
    status.textContent = text;
    status.title = text;
    status.classList.toggle("error", error);
    if (error) this.setNotice(text); // the status line can be narrow: an error also shows over the graph
  }

  // ------------------------------------------------------------------------------ loading
  async start() {
    document.body.dataset.status = "loading";
    // The graph named in the URL is fetched at once (with the URL's thresholds and pinned nodes),
    // alongside the server info and the list.
    const url = new URLSearchParams(location.search);
    const wanted = url.get("graph") || url.get("slug");
    const urlParams = urlStateParams(location.search);
    const started = performance.now();
    const early = wanted ? this.fetchServerGraph(wanted, urlParams).then((loaded) => ({ loaded }), (error) => ({ error })) : null;
    try {
      this.info = await api.info();
      this.serverUp = true;
      $("attribute-button").hidden = !this.info.attribution;
    } catch (error) {
      this.setStatus(`server unavailable (${error.message}); open a graph file`, true);
      document.body.dataset.status = "ready";
      return;
    }
    const graphs = await this.listGraphs();
    if (early) {
      const { loaded, error } = await early;
      if (loaded) {
        $("graph-select").value = wanted;
        this.metrics.loadMs = performance.now() - started;
        this.show(loaded.data, { state: loaded.state });
        return;
      }
      this.setStatus(`cannot open ${wanted}: ${error.message}`, true);
    }
    const first = graphs.find((g) => !g.error);
    if (!first) {
      if (!early) this.setStatus("no graphs in the served directory: open a graph file");
      document.body.dataset.status = early ? "error" : "ready";
      return;
    }
    $("graph-select").value = first.slug;
    await this.openServerGraph(first.slug);
  }

  /** Fill the graph menu: one entry per graph (unreadable files are listed in the status line). */
  async listGraphs() {
    let graphs = [];
    try {
      graphs = (await api.graphs()).graphs;
    } catch (error) {
      this.setStatus(error.message, true);
    }
    const readable = graphs.filter((g) => !g.error);
    const unreadable = graphs.filter((g) => g.error);
    const select = $("graph-select");
    replaceChildren(select, readable.map((g) => el("option", {
      value: g.slug,
      text: `${g.slug}${g.prompt ? ` — ${g.prompt.slice(0, 40)}` : ""}`,
      title: g.prompt || g.file,
    })));
    select.title = unreadable.length
      ? `Graphs in the served directory (${unreadable.length} unreadable file(s) skipped: ${unreadable.map((g) => g.file || g.slug).join(", ")})`
      : "Graphs in the served directory";
    this.graphs = readable;
    return graphs;
  }

  /**
   * A server graph with the state to show on it: `params` (from the URL) override the graph's saved
   * qParams, key by key. The server prunes at the state's thresholds and keeps the nodes the state
   * names; when the saved qParams ask for more than the first request did, it is fetched again.
   */
  async fetchServerGraph(slug, params = {}) {
    const request = (state) => ({
      nodeThreshold: state.threshold ?? undefined, edgeThreshold: state.edgeThreshold ?? undefined, keep: state.referencedIds(),
    });
    const first = request(ExplorerState.fromParams(params));
    let data = await loadServerGraph(slug, first);
    const state = ExplorerState.fromParams({ ...data.qParams, ...params });
    const second = request(state);
    if (JSON.stringify(second) !== JSON.stringify(first)) data = await loadServerGraph(slug, second);
    return { data, state };
  }

  /** A search hit: select the node in the open graph, or open its graph clicked on it. */
  openNode(slug, nodeId) {
    const here = this.data && (slug === null || (this.data.origin === "server" && this.data.slug === slug));
    const i = here ? this.data.index.get(nodeId) : undefined;
    if (i !== undefined) { this.select(i); return; }
    if (here) { // pruned away here: fetch the graph again keeping the node
      if (this.data.origin !== "server") return;
      this.state.clickedId = nodeId;
      this.refetch();
      return;
    }
    $("graph-select").value = slug;
    this.openServerGraph(slug, { clickedId: nodeId });
  }

  async openServerGraph(slug, params = {}) {
    const started = performance.now();
    this.setStatus(`loading ${slug} …`);
    document.body.dataset.status = "loading";
    try {
      const { data, state } = await this.fetchServerGraph(slug, params);
      this.metrics.loadMs = performance.now() - started;
      this.show(data, { state });
    } catch (error) {
      this.setStatus(`cannot open ${slug}: ${error.message}`, true);
      document.body.dataset.status = "error";
    }
  }

  /** Fetch the current graph again at other thresholds, keeping the user's state. */
  async refetch() {
    const data = this.data;
    if (!data || data.origin !== "server") return;
    const state = this.state;
    document.body.dataset.status = "loading";
    try {
      const fresh = await loadServerGraph(data.slug, {
        nodeThreshold: state.threshold ?? undefined, edgeThreshold: state.edgeThreshold ?? undefined, keep: state.referencedIds(),
      });
      this.show(fresh, { state });
    } catch (error) {
      this.setStatus(`cannot open ${data.slug}: ${error.message}`, true);
      document.body.dataset.status = "error";
    }
  }

  async openFile(file) {
    this.setStatus(`reading ${file.name} …`);
    try {
      const data = await readGraphFile(file);
      $("graph-select").value = "";
      this.show(data, { state: ExplorerState.fromParams(data.qParams) });
    } catch (error) {
      this.setStatus(error.message, true);
    }
  }

  show(data, { state }) {
    this.data = data;
    const missing = state.restrictTo(new Set(data.index.keys()));
    if (state !== this.state) {
      this.state = state;
      this.state.onChange((what) => this.stateChanged(what));
      this.subgraph.state = this.state;
    }
    const loadedThreshold = data.settings.node_threshold;
    const fallback = this.state.threshold === null || this.autoPruned === data.slug ? this.defaultPruning(data) : null;
    if (fallback?.threshold !== undefined) this.state.threshold = fallback.threshold;
    const threshold = this.state.threshold ?? (typeof loadedThreshold === "number" ? loadedThreshold : 1);
    $("threshold").value = String(threshold);
    $("threshold-value").textContent = Number(threshold).toFixed(2);
    $("hide-errors").checked = this.state.hideErrors;
    if (typeof data.settings.edge_threshold === "number") $("edge-threshold").value = String(data.settings.edge_threshold);
    $("edge-threshold-label").hidden = data.kind !== "tracewire";
    this.updateDownload();

    const limitSelect = $("link-limit");
    if (this.state.linkLimit === null && data.nLinks > DEFAULT_ALL_LINKS_UP_TO) this.state.linkLimit = DEFAULT_LINK_LIMIT;
    limitSelect.value = this.state.linkLimit === null ? "all" : String(this.state.linkLimit);
    if (!limitSelect.value) { limitSelect.value = "all"; this.state.linkLimit = null; } // not an offered choice
    this.renderer.linkLimit = this.state.linkLimit ?? Infinity;
    this.renderer.setGraph(data, this.visibleMask());
    this.renderer.setFocus({ pinned: this.pinnedIndices(), selected: -1, hovered: -1 });
    const canSteer = this.info.steering && data.origin === "server";
    $("steer-panel").classList.toggle("open", canSteer);
    $("steer-panel").classList.toggle("collapsed", !canSteer);
    this.steering.configure(data, canSteer, this.info.steering
      ? "Steering works on graphs served by this server (not on opened files)."
      : "Steering needs a model: start `tracewire serve DIR --model M --transcoders T`.");
    const clicked = this.state.clickedId ? data.index.get(this.state.clickedId) : undefined;
    this.selected = -1;
    if (clicked !== undefined) this.select(clicked);
    else { this.nodePanel.clear(); this.card.empty("A feature node's card shows here."); }
    this.subgraph.render(data);
    this.requestScores();
    this.updateSummary();
    this.syncUrl();
    const name = data.origin === "server" ? data.slug : data.fileName;
    this.setStatus(`${name}: ${data.nodes.length} nodes, ${data.nLinks} links`);
    this.setNotice([
      missing.length ? `${missing.length} node(s) named by the saved or shared state are not in this graph: ${missing.slice(0, 6).join(", ")}${missing.length > 6 ? ", …" : ""}.` : "",
      fallback?.note || "",
    ].filter(Boolean).join(" "));
    if (fallback?.refetch) this.refetch();
    // Timed once the frame with the drawing is painted: a task queued from requestAnimationFrame
    // runs after that frame's paint, which is when a software canvas is rasterised.
    requestAnimationFrame(() => setTimeout(() => {
      this.metrics.renders += 1;
      if (this.metrics.firstRenderMs === undefined) this.metrics.firstRenderMs = performance.now();
      this.metrics.lastRenderMs = performance.now();
      document.body.dataset.status = "ready";
      document.body.dataset.graph = name;
    }, 0));
  }

  /**
   * When the graph's own pruning shows no feature node (common for small graphs, whose influence
   * sits in error nodes and tokens): the pruning that shows the most influential features, and
   * a note that says why. A served .safetensors graph without any feature is fetched once more at
   * a looser pruning; if none survive even then, the note says so.
   */
  defaultPruning(data) {
    const loaded = typeof data.settings.node_threshold === "number" ? data.settings.node_threshold : 1;
    const influences = [];
    for (let i = 0; i < data.nodes.length; i++) {
      if (data.nodeKind[i] === KIND.FEATURE && !Number.isNaN(data.influence[i])) influences.push(data.influence[i]);
    }
    if (influences.some((v) => v <= loaded + 1e-9)) { // features show as they are
      return this.autoPruned === data.slug ? { note: `No feature survived the default pruning (${this.autoPrunedFrom.toFixed(2)}): showing pruning ${loaded.toFixed(2)}.` } : null;
    }
    if (influences.length) {
      influences.sort((a, b) => a - b);
      const shown = Math.min(DEFAULT_FEATURES_SHOWN, influences.length);
      const threshold = Math.min(1, Math.ceil(influences[shown - 1] * 100) / 100);
      return { threshold, note: `No feature survives pruning at ${loaded.toFixed(2)}: showing the ${shown} most influential feature(s) (pruning ${threshold.toFixed(2)}).` };
    }
    if (data.origin === "server" && data.kind === "tracewire" && loaded < LOOSE_PRUNING && this.autoPruned !== data.slug) {
      this.autoPruned = data.slug;
      this.autoPrunedFrom = loaded;
      return { threshold: LOOSE_PRUNING, refetch: true, note: `No feature survives pruning at ${loaded.toFixed(2)}; loading pruning ${LOOSE_PRUNING} …` };
    }
    const from = this.autoPruned === data.slug ? `${this.autoPrunedFrom.toFixed(2)} or ` : "";
    return { note: `No feature node survives pruning at ${from}${loaded.toFixed(2)} (edges ${data.settings.edge_threshold ?? "—"}): this graph's influence is in its error and token nodes. Move the pruning slider right.` };
  }

  /** A message that stays until the next graph (e.g. state that names nodes the graph lacks). */
  setNotice(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  /** The URL always holds the whole view, so reloading or sharing it restores it. */
  syncUrl() {
    if (!this.data) return;
    const graph = this.data.origin === "server" ? this.data.slug : null;
    const query = this.state.toUrlParams(graph).toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  updateDownload() {
    const download = $("download-link");
    const data = this.data;
    download.href = data.origin === "server" ? api.documentUrl(data.slug, this.serverQuery()) : "#";
    download.setAttribute("download", `${String(data.slug).replace(/\.json(\.gz)?$/, "")}.json`);
  }

  /** Save a file-opened graph, with the current state as its qParams, as a download. */
  downloadDocument() {
    const document = { ...this.data.document, qParams: this.state.toQParams() };
    const blob = new Blob([JSON.stringify(document)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: this.data.fileName.replace(/\.gz$/, "") });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 5000);
  }

  serverQuery() {
    const params = new URLSearchParams(this.data.settings.query || "");
    return params.toString();
  }

  visibleMask() {
    const { data } = this;
    const threshold = Number($("threshold").value);
    const hideErrors = $("hide-errors").checked;
    const visible = new Uint8Array(data.nodes.length);
    const pinned = this.pinnedIndices();
    for (let i = 0; i < visible.length; i++) {
      const kind = data.nodeKind[i];
      if (kind === KIND.EMBEDDING || kind === KIND.LOGIT || pinned.has(i)) visible[i] = 1;
      else if (kind === KIND.ERROR && hideErrors) visible[i] = 0;
      else visible[i] = Number.isNaN(data.influence[i]) || data.influence[i] <= threshold + 1e-9 ? 1 : 0;
    }
    return visible;
  }

  updateSummary() {
    const shown = this.renderer.visible.reduce((a, v) => a + v, 0);
    const bundled = this.renderer.bundles ? ` (drawn as ${this.renderer.bundles.length} bundles by layer and position; hover a node for its own)` : "";
    $("graph-summary").textContent = `${shown} of ${this.data.nodes.length} nodes · ${this.renderer.visibleLinks} of ${this.data.nLinks} links${bundled}`;
  }

  // ------------------------------------------------------------------------------ selection
  clickNode(i, event) {
    if (this.grouping && i >= 0) { this.addToGesture(i); return; }
    if (i < 0) { this.select(-1); return; }
    if (event.ctrlKey || event.metaKey || event.shiftKey) this.state.togglePin(this.data.nodes[i].node_id);
    else this.select(i);
  }

  /** A node dropped on another: both join one supernode (the target's, if it is in one). */
  dropOn(dragged, target) {
    const ids = [this.data.nodes[target].node_id, this.data.nodes[dragged].node_id];
    const group = this.state.group(ids, this.state.supernodeOf(ids[0])?.name || this.groupName());
    if (group) this.setStatus(`supernode "${group.name}": ${group.members.length} nodes`);
  }

  /** Hold g and click nodes: they form one supernode when g is released. */
  addToGesture(i) {
    const id = this.data.nodes[i].node_id;
    if (!this.grouping.includes(id)) this.grouping.push(id);
    if (!this.state.isPinned(id)) this.state.togglePin(id);
    this.setStatus(`grouping ${this.grouping.length} node(s): release g to make the supernode`);
  }

  endGesture() {
    const ids = this.grouping;
    this.grouping = null;
    delete document.body.dataset.grouping;
    if (ids.length >= 2) {
      const group = this.state.group(ids, this.groupName());
      if (group) this.setStatus(`supernode "${group.name}": ${group.members.length} nodes`);
    } else if (!ids.length && !this.subgraph.groupChecked()) {
      this.setStatus("hold g and click nodes, or check two or more items in the subgraph list and press g");
    }
  }

  groupName() {
    return $("group-name")?.value.trim() || "";
  }

  select(i) {
    this.selected = i;
    this.state.clickedId = i >= 0 ? this.data.nodes[i].node_id : "";
    this.renderer.setFocus({ selected: i });
    this.syncUrl();
    if (i < 0) { this.nodePanel.clear(); this.attention.clear(); return; }
    this.showNode(i);
    this.attention.show(this.data, i);
    const key = featureKey(this.data.nodes[i]);
    if (key) this.card.show(key[0], key[1], { available: this.info.features, writable: this.info.labels_writable });
    else this.card.empty("Not a feature node: no card.");
  }

  showNode(i) {
    this.nodePanel.show(this.data, i, {
      pinned: this.state.isPinned(this.data.nodes[i].node_id),
      labels: this.state.nodeLabels,
      visible: this.renderer.visible,
      steering: this.steering.available,
    });
  }

  pinnedIndices() {
    return new Set(this.state.pinned.map((id) => this.data.index.get(id)).filter((i) => i !== undefined));
  }

  stateChanged(what) {
    if (what === "pins") {
      this.renderer.setFocus({ pinned: this.pinnedIndices() });
      this.renderer.setVisible(this.visibleMask());
      this.updateSummary();
      this.requestScores();
      if (this.selected >= 0) this.showNode(this.selected);
    }
    this.subgraph.render(this.data);
    this.syncUrl();
  }

  async updateScores() {
    const data = this.data;
    if (!data) return;
    if (data.origin !== "server") { this.subgraph.setScores(null, "scores are computed for graphs served by this server"); return; }
    if (!this.state.pinned.length) { this.subgraph.setScores(null); return; }
    const request = ++this.scoreRequest;
    const pinned = [...this.state.pinned];
    try {
      const scores = await api.subgraphScores(data.slug, pinned);
      if (request === this.scoreRequest) this.subgraph.setScores(scores, "", pinned);
    } catch (error) {
      if (request === this.scoreRequest) this.subgraph.setScores(null, error.message);
    }
  }

  // ------------------------------------------------------------------------------ saving
  async save() {
    if (!this.data) return;
    this.state.threshold = Number($("threshold").value);
    this.state.hideErrors = $("hide-errors").checked;
    const qParams = this.state.toQParams();
    if (this.data.origin === "file") {
      this.downloadDocument();
      this.setStatus("downloaded the graph with its state");
      return;
    }
    try {
      const saved = await api.saveQParams(this.data.slug, qParams);
      this.data.qParams = saved.qParams;
      this.setStatus(`state saved into ${saved.file}`);
      document.body.dataset.saved = String(Date.now());
    } catch (error) {
      this.setStatus(`not saved: ${error.message}`, true);
    }
  }

  // ------------------------------------------------------------------------------ controls
  bindControls() {
    $("graph-select").addEventListener("change", (event) => { if (event.target.value) this.openServerGraph(event.target.value); });
    $("file-input").addEventListener("change", (event) => { const file = event.target.files[0]; if (file) this.openFile(file); event.target.value = ""; });
    const slider = $("threshold");
    slider.addEventListener("input", () => {
      $("threshold-value").textContent = Number(slider.value).toFixed(2);
      if (!this.data) return;
      this.state.threshold = Number(slider.value);
      this.renderer.setVisible(this.visibleMask());
      this.updateSummary();
    });
    slider.addEventListener("change", () => {
      this.syncUrl();
      // Past what the server pruned to: ask it for a less pruned graph.
      const loaded = this.data?.settings.node_threshold;
      if (this.data?.origin === "server" && typeof loaded === "number" && Number(slider.value) > loaded + 1e-9) this.refetch();
    });
    $("edge-threshold").addEventListener("change", (event) => {
      const value = Number(event.target.value);
      if (!this.data || !(value >= 0 && value <= 1)) return;
      this.state.edgeThreshold = value;
      if (this.data.origin === "server" && this.data.kind === "tracewire") this.refetch();
    });
    $("link-limit").addEventListener("change", (event) => {
      this.state.linkLimit = event.target.value === "all" ? null : Number(event.target.value);
      this.renderer.setLinkLimit(this.state.linkLimit ?? Infinity);
      if (this.data) { this.updateSummary(); this.syncUrl(); }
      event.target.blur(); // a focused menu would take the next key press (p, g, Esc)
    });
    $("hide-errors").addEventListener("change", () => {
      if (!this.data) return;
      this.state.hideErrors = $("hide-errors").checked;
      this.renderer.setVisible(this.visibleMask());
      this.updateSummary();
      this.syncUrl();
    });
    $("graph-select").addEventListener("change", (event) => event.target.blur());
    $("save-button").addEventListener("click", () => this.save());
    $("attribute-button").addEventListener("click", () => {
      const box = $("attribute-box");
      box.hidden = !box.hidden;
      if (!box.hidden) $("attr-prompt").focus();
    });
    $("download-link").addEventListener("click", (event) => {
      if (this.data?.origin !== "file") return;
      event.preventDefault();
      this.downloadDocument();
    });
    document.addEventListener("keydown", (event) => {
      if (!this.data || typingIn(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "p") {
        const i = this.hovered >= 0 ? this.hovered : this.selected;
        if (i >= 0) this.state.togglePin(this.data.nodes[i].node_id);
      } else if (event.key === "g") {
        if (!event.repeat && !this.grouping) { this.grouping = []; document.body.dataset.grouping = "true"; }
      } else if (event.key === "Escape") {
        this.select(-1);
      }
    });
    document.addEventListener("keyup", (event) => { if (event.key === "g" && this.grouping) this.endGesture(); });
    window.addEventListener("blur", () => { if (this.grouping) this.endGesture(); });
  }
}

const explorer = new Explorer();
explorer.start();

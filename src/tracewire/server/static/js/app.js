// The explorer page: loads a graph (from the server or a file), keeps the user's state, and wires
// the canvas and the panels together. `window.tracewire` exposes the explorer and its timings for
// tests and for the curious (e.g. `tracewire.metrics.firstRenderMs`).

import { api } from "./api.js";
import { AttentionPanel } from "./attention_panel.js";
import { debounce, el, replaceChildren } from "./dom.js";
import { FeatureCardPanel } from "./feature_card.js";
import { featureKey, KIND, loadServerGraph, readGraphFile } from "./graph_data.js";
import { NodePanel } from "./node_panel.js";
import { Renderer } from "./renderer.js";
import { ExplorerState } from "./state.js";
import { SteeringPanel } from "./steering.js";
import { SubgraphPanel } from "./subgraph.js";

const $ = (id) => document.getElementById(id);
// Beyond this many links a graph opens showing only the strongest DEFAULT_LINK_LIMIT (a wall of
// hundreds of thousands of overlapping lines shows nothing); the "links" menu changes it.
const DEFAULT_ALL_LINKS_UP_TO = 120000;
const DEFAULT_LINK_LIMIT = 20000;

class Explorer {
  constructor() {
    this.info = { features: false, labels_writable: false, steering: false, read_only: true };
    this.data = null;
    this.state = new ExplorerState();
    this.selected = -1;
    this.hovered = -1;
    this.metrics = { renders: 0 };
    this.scoreRequest = 0;
    this.renderer = new Renderer({
      pane: $("graph-pane"), base: $("base-canvas"), overlay: $("overlay-canvas"), tooltip: $("tooltip"),
      onHover: (i) => { this.hovered = i; this.renderer.setFocus({ hovered: i }); },
      onClick: (i, event) => this.clickNode(i, event),
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
    this.requestScores = debounce(() => this.updateScores(), 120);
    this.bindControls();
    window.tracewire = { explorer: this, metrics: this.metrics };
  }

  setStatus(text, error = false) {
    const status = $("status");
    status.textContent = text;
    status.title = text;
    status.classList.toggle("error", error);
  }

  // ------------------------------------------------------------------------------ loading
  async start() {
    document.body.dataset.status = "loading";
    // The graph named in the URL is fetched at once, alongside the server info and the list.
    const wanted = new URLSearchParams(location.search).get("graph");
    const started = performance.now();
    const early = wanted ? loadServerGraph(wanted).then((data) => ({ data }), (error) => ({ error })) : null;
    try {
      this.info = await api.info();
    } catch (error) {
      this.setStatus(`server unavailable (${error.message}); open a graph file`, true);
      document.body.dataset.status = "ready";
      return;
    }
    let graphs = [];
    try {
      graphs = (await api.graphs()).graphs;
    } catch (error) {
      this.setStatus(error.message, true);
    }
    const select = $("graph-select");
    replaceChildren(select, graphs.map((g) => el("option", {
      value: g.slug, disabled: Boolean(g.error),
      text: `${g.slug}${g.prompt ? ` — ${g.prompt.slice(0, 40)}` : ""}${g.error ? " (unreadable)" : ""}`,
      title: g.error || g.prompt || g.file,
    })));
    if (early) {
      const { data, error } = await early;
      if (data) {
        select.value = wanted;
        this.metrics.loadMs = performance.now() - started;
        this.show(data);
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
    select.value = first.slug;
    await this.openServerGraph(first.slug);
  }

  async openServerGraph(slug, { nodeThreshold, keepState = false } = {}) {
    const started = performance.now();
    this.setStatus(`loading ${slug} …`);
    document.body.dataset.status = "loading";
    try {
      const edgeInput = $("edge-threshold");
      const data = await loadServerGraph(slug, { nodeThreshold, edgeThreshold: nodeThreshold === undefined && !keepState ? undefined : edgeInput.value });
      this.metrics.loadMs = performance.now() - started;
      history.replaceState(null, "", `?graph=${encodeURIComponent(slug)}`);
      this.show(data, { keepState });
    } catch (error) {
      this.setStatus(`cannot open ${slug}: ${error.message}`, true);
      document.body.dataset.status = "error";
    }
  }

  async openFile(file) {
    this.setStatus(`reading ${file.name} …`);
    try {
      const data = await readGraphFile(file);
      $("graph-select").value = "";
      this.show(data, {});
    } catch (error) {
      this.setStatus(error.message, true);
    }
  }

  show(data, { keepState = false } = {}) {
    const previous = this.state;
    this.data = data;
    const ids = new Set(data.index.keys());
    if (keepState) {
      this.state = previous;
    } else {
      this.state = ExplorerState.fromQParams(data.qParams, ids);
      this.state.onChange((what) => this.stateChanged(what));
      this.subgraph.state = this.state;
    }
    const loadedThreshold = data.settings.node_threshold;
    const threshold = this.state.threshold ?? (typeof loadedThreshold === "number" ? loadedThreshold : 1);
    $("threshold").value = String(threshold);
    $("threshold-value").textContent = Number(threshold).toFixed(2);
    $("hide-errors").checked = this.state.hideErrors;
    if (typeof data.settings.edge_threshold === "number") $("edge-threshold").value = String(data.settings.edge_threshold);
    $("edge-threshold-label").hidden = data.kind !== "tracewire";
    const download = $("download-link");
    download.href = data.origin === "server" ? api.documentUrl(data.slug, this.serverQuery()) : "#";
    download.setAttribute("download", `${data.slug}.json`);

    const limitSelect = $("link-limit");
    if (this.state.linkLimit === null && !keepState && data.nLinks > DEFAULT_ALL_LINKS_UP_TO) this.state.linkLimit = DEFAULT_LINK_LIMIT;
    limitSelect.value = this.state.linkLimit === null ? "all" : String(this.state.linkLimit);
    if (!limitSelect.value) { limitSelect.value = "all"; this.state.linkLimit = null; } // not an offered choice
    this.renderer.linkLimit = this.state.linkLimit ?? Infinity;
    this.renderer.setGraph(data, this.visibleMask());
    this.renderer.setFocus({ pinned: this.pinnedIndices(), selected: -1, hovered: -1 });
    const canSteer = this.info.steering && data.origin === "server";
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
    const name = data.origin === "server" ? data.slug : data.fileName;
    this.setStatus(`${name}: ${data.nodes.length} nodes, ${data.nLinks} links`);
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

  serverQuery() {
    const params = new URLSearchParams(this.data.settings.query || "");
    return params.toString();
  }

  visibleMask() {
    const { data } = this;
    const threshold = Number($("threshold").value);
    const hideErrors = $("hide-errors").checked;
    const visible = new Uint8Array(data.nodes.length);
    for (let i = 0; i < visible.length; i++) {
      const kind = data.nodeKind[i];
      if (kind === KIND.EMBEDDING || kind === KIND.LOGIT) visible[i] = 1;
      else if (kind === KIND.ERROR && hideErrors) visible[i] = 0;
      else visible[i] = Number.isNaN(data.influence[i]) || data.influence[i] <= threshold + 1e-9 ? 1 : 0;
    }
    return visible;
  }

  updateSummary() {
    const shown = this.renderer.visible.reduce((a, v) => a + v, 0);
    $("graph-summary").textContent = `${shown} of ${this.data.nodes.length} nodes · ${this.renderer.visibleLinks} of ${this.data.nLinks} links`;
  }

  // ------------------------------------------------------------------------------ selection
  clickNode(i, event) {
    if (i < 0) { this.select(-1); return; }
    if (event.ctrlKey || event.metaKey || event.shiftKey) this.state.togglePin(this.data.nodes[i].node_id);
    else this.select(i);
  }

  select(i) {
    this.selected = i;
    this.state.clickedId = i >= 0 ? this.data.nodes[i].node_id : "";
    this.renderer.setFocus({ selected: i });
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
      this.requestScores();
      if (this.selected >= 0) this.showNode(this.selected);
    }
    this.subgraph.render(this.data);
  }

  async updateScores() {
    const data = this.data;
    if (!data) return;
    if (data.origin !== "server") { this.subgraph.setScores(null, "scores are computed for graphs served by this server"); return; }
    if (!this.state.pinned.length) { this.subgraph.setScores(null); return; }
    const request = ++this.scoreRequest;
    try {
      const scores = await api.subgraphScores(data.slug, this.state.pinned);
      if (request === this.scoreRequest) this.subgraph.setScores(scores);
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
      const document = { ...this.data.document, qParams };
      const blob = new Blob([JSON.stringify(document)], { type: "application/json" });
      const link = el("a", { href: URL.createObjectURL(blob), download: this.data.fileName.replace(/\.gz$/, "") });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 5000);
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
      // Past what the server pruned to: ask it for a less pruned graph.
      const data = this.data;
      const loaded = data?.settings.node_threshold;
      if (data && data.origin === "server" && data.kind === "tracewire" && typeof loaded === "number" && Number(slider.value) > loaded + 1e-9) {
        this.openServerGraph(data.slug, { nodeThreshold: Number(slider.value), keepState: true });
      }
    });
    $("edge-threshold").addEventListener("change", () => {
      const data = this.data;
      if (data && data.origin === "server" && data.kind === "tracewire") {
        this.openServerGraph(data.slug, { nodeThreshold: Math.max(Number(slider.value), data.settings.node_threshold || 0), keepState: true });
      }
    });
    $("link-limit").addEventListener("change", (event) => {
      this.state.linkLimit = event.target.value === "all" ? null : Number(event.target.value);
      this.renderer.setLinkLimit(this.state.linkLimit ?? Infinity);
      if (this.data) this.updateSummary();
    });
    $("hide-errors").addEventListener("change", () => {
      if (!this.data) return;
      this.state.hideErrors = $("hide-errors").checked;
      this.renderer.setVisible(this.visibleMask());
      this.updateSummary();
    });
    $("save-button").addEventListener("click", () => this.save());
    document.addEventListener("keydown", (event) => {
      if (!this.data || event.target.closest?.("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "p") {
        const i = this.hovered >= 0 ? this.hovered : this.selected;
        if (i >= 0) this.state.togglePin(this.data.nodes[i].node_id);
      } else if (event.key === "g") {
        if (!this.subgraph.groupChecked()) this.setStatus("check two or more pinned items in the subgraph list, then press g");
      } else if (event.key === "Escape") {
        this.select(-1);
      }
    });
  }
}

const explorer = new Explorer();
explorer.start();

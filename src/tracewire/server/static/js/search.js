// The search box: features by label, id or token, across every graph of the served directory and
// the feature store (GET /api/search), or within the open file when there is no server. A result
// lists the graphs where the feature survives pruning; clicking one opens that graph on the node.

import { api } from "./api.js";
import { debounce, el, replaceChildren } from "./dom.js";
import { featureKey } from "./graph_data.js";

const MIN_QUERY = 2;

export class SearchBox {
  /** @param {{onOpen: (slug: string|null, nodeId: string) => void, currentData: () => object}} hooks */
  constructor(input, panel, { onOpen, currentData, serverAvailable }) {
    Object.assign(this, { input, panel, onOpen, currentData, serverAvailable });
    this.request = 0;
    const run = debounce(() => this.run(), 200);
    input.addEventListener("input", run);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") { this.close(); input.blur(); }
      if (event.key === "Enter") this.run();
    });
    input.addEventListener("focus", () => { if (this.panel.childElementCount) this.panel.hidden = false; });
    document.addEventListener("pointerdown", (event) => {
      if (!panel.contains(event.target) && event.target !== input) this.close();
    });
  }

  close() { this.panel.hidden = true; }

  async run() {
    const query = this.input.value.trim();
    const request = ++this.request;
    if (query.length < MIN_QUERY) { this.close(); return; }
    let body;
    try {
      body = this.serverAvailable() ? await api.search(query) : { results: this.searchOpenFile(query), skipped: [] };
    } catch (error) {
      body = { results: [], skipped: [], error: error.message };
    }
    if (request !== this.request) return; // a newer query was typed meanwhile
    this.render(query, body);
  }

  /** Without a server: feature nodes of the open graph whose label, id or token matches. */
  searchOpenFile(query) {
    const data = this.currentData();
    if (!data) return [];
    const text = query.toLowerCase();
    const rows = new Map();
    data.nodes.forEach((node, i) => {
      const key = featureKey(node);
      if (!key) return;
      const label = data.label(i);
      const token = data.tokens[data.ctx[i]] || "";
      const match = node.node_id.toLowerCase() === text ? "id" : label.toLowerCase().includes(text) ? "label" : token.trim().toLowerCase() === text ? "token" : null;
      if (!match) return;
      const id = `${key[0]}_${key[1]}`;
      if (!rows.has(id)) rows.set(id, { layer: key[0], feature: key[1], label: node.clerp || "", match, graphs: [] });
      rows.get(id).graphs.push({ slug: null, node_id: node.node_id, token, influence: Number.isNaN(data.influence[i]) ? null : data.influence[i] });
    });
    return [...rows.values()];
  }

  render(query, body) {
    const items = body.results.map((row) => el("li", { class: "search-result", "data-feature": `${row.layer}_${row.feature}` },
      el("div", { class: "search-title" },
        el("span", { class: "search-label", text: row.label || `L${row.layer} #${row.feature}` }),
        el("span", { class: "muted", text: ` L${row.layer} #${row.feature} · ${row.match}` })),
      row.graphs.length
        ? el("div", { class: "search-graphs" }, row.graphs.map((g) => el("button", {
          class: "search-graph", "data-slug": g.slug ?? "", "data-node": g.node_id,
          title: `open ${g.slug ?? "this graph"} on node ${g.node_id}`,
          text: `${g.slug ?? "this graph"} · "${g.token}"${g.influence === null ? "" : ` · ${g.influence.toFixed(2)}`}`,
          onclick: () => { this.close(); this.onOpen(g.slug, g.node_id); },
        })))
        : el("div", { class: "muted", text: "in the feature store; no served graph keeps it" })));
    const summary = body.error ? `search failed: ${body.error}`
      : `${body.results.length ? body.results.length : "no"} feature(s) for "${query}"` +
        (body.skipped?.length ? ` · ${body.skipped.length} unreadable graph(s) skipped` : "");
    replaceChildren(this.panel, el("div", { class: "search-summary", text: summary }), el("ul", {}, items));
    this.panel.hidden = false;
  }
}

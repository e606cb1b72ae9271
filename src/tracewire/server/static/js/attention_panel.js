// Attention, explained, for the clicked node: its strongest incoming links, each split by
// attention head on request (GET /api/graphs/{slug}/heads; a path counts for the last head it
// crosses), and for a head, why it attends from the target's position to the source's (POST
// /api/graphs/{slug}/qk): the score as (query-side node, key-side node) pairs plus constants, and
// each side's totals. Every node named there is clickable.

import { api } from "./api.js";
import { el, formatNumber, replaceChildren } from "./dom.js";

const LINKS_SHOWN = 8;
const HEADS_SHOWN = 8;
const PAIRS_SHOWN = 10;

export class AttentionPanel {
  constructor(root, { onSelect, setStatus }) {
    Object.assign(this, { root, onSelect, setStatus });
    this.clear();
  }

  clear(message = "Click a node, then a link's “heads”.") {
    replaceChildren(this.root, el("h2", { text: "attention" }), el("p", { class: "empty", text: message }));
  }

  show(data, i) {
    this.data = data;
    if (data.origin !== "server") { this.clear("Attention needs a graph served from a .safetensors file."); return; }
    const incoming = Array.from(data.incoming(i))
      .sort((a, b) => Math.abs(data.linkWeight[b]) - Math.abs(data.linkWeight[a]))
      .slice(0, LINKS_SHOWN);
    this.detail = el("div", { id: "attention-detail" });
    const list = el("ul", { class: "link-list", id: "attention-links" }, incoming.map((e) => {
      const j = data.linkSource[e];
      return el("li", {},
        el("button", { class: "attention-heads", text: "heads", onclick: () => this.heads(i, j) }),
        el("span", { class: `weight ${data.linkWeight[e] < 0 ? "neg" : "pos"}`, text: formatNumber(data.linkWeight[e]) }),
        el("span", { class: "name", text: data.label(j, {}) }),
      );
    }));
    replaceChildren(this.root, el("h2", { text: "attention" }),
      incoming.length ? list : el("p", { class: "empty", text: "No incoming links." }), this.detail);
  }

  nodeLink(nodeId, text) {
    const j = nodeId === null || nodeId === undefined ? undefined : this.data.index.get(nodeId);
    if (j === undefined) return el("span", { class: "name", text });
    return el("a", { href: "#", class: "name", "data-node": nodeId, text, onclick: (event) => { event.preventDefault(); this.onSelect(j); } });
  }

  async heads(target, source) {
    const { data } = this;
    const ids = { target_id: data.nodes[target].node_id, source_id: data.nodes[source].node_id };
    replaceChildren(this.detail, el("p", { class: "empty", text: "splitting the link by head…" }));
    try {
      const split = await api.edgeHeads(data.slug, ids, HEADS_SHOWN);
      const query = data.ctx[target];
      const key = data.ctx[source];
      replaceChildren(this.detail,
        el("h3", { text: `${data.label(source, {})} → ${data.label(target, {})}` }),
        el("div", { class: "node-facts", text: `link ${formatNumber(split.edge)} = direct ${formatNumber(split.direct)} + heads (${split.rule} rule)` }),
        el("ul", { class: "link-list", id: "attention-head-list" }, split.heads.map((h) => el("li", {
          title: `why layer ${h.layer} head ${h.head} attends from position ${query} to ${key}`,
          onclick: () => this.qk(h.layer, h.head, query, key),
        },
        el("span", { class: `weight ${h.value < 0 ? "neg" : "pos"}`, text: formatNumber(h.value) }),
        el("span", { class: "name", text: `layer ${h.layer} head ${h.head}` }),
        ))),
      );
    } catch (error) {
      replaceChildren(this.detail, el("p", { class: "empty", text: error.message }));
      this.setStatus(`heads: ${error.message}`, true);
    }
  }

  async qk(layer, head, query, key) {
    const { data } = this;
    const box = el("div", { id: "attention-qk" }, el("p", { class: "empty", text: "attributing the attention score…" }));
    this.detail.querySelector("#attention-qk")?.remove();
    this.detail.append(box);
    const label = (s) => `${s.kind}${s.kind === "token" ? "" : ` L${s.layer}`}${s.kind === "feature" ? `#${s.feature}` : ""} @${s.pos} "${data.tokens[s.pos] ?? ""}"`;
    try {
      const [entry] = await api.qk(data.slug, { layer, head, query, keys: [key], pairs: PAIRS_SHOWN });
      const constants = Object.values(entry.constants).reduce((a, b) => a + b, 0);
      const side = (name) => el("div", {}, el("h3", { text: `${name}-side totals` }),
        el("ul", { class: "link-list" }, entry[`${name}_marginals`].slice(0, 5).map((m) => el("li", {},
          el("span", { class: `weight ${m.value < 0 ? "neg" : "pos"}`, text: formatNumber(m.value) }),
          this.nodeLink(m.source.node_id, label(m.source))))));
      replaceChildren(box,
        el("h3", { text: `layer ${layer} head ${head} (kv head ${entry.kv_head}): query ${query} → key ${key}` }),
        el("div", { class: "node-facts", text: `score ${formatNumber(entry.score)} · weight ${formatNumber(entry.pattern)} · pairs ${formatNumber(entry.pair_total)} + constants ${formatNumber(constants)}` }),
        el("ul", { class: "link-list", id: "attention-pairs" }, entry.pairs.map((p) => el("li", {},
          el("span", { class: `weight ${p.value < 0 ? "neg" : "pos"}`, text: formatNumber(p.value) }),
          this.nodeLink(p.query_source.node_id, label(p.query_source)),
          el("span", { text: " | " }),
          this.nodeLink(p.key_source.node_id, label(p.key_source))))),
        side("query"), side("key"));
    } catch (error) {
      replaceChildren(box, el("p", { class: "empty", text: error.message }));
      this.setStatus(`QK: ${error.message}`, true);
    }
  }
}


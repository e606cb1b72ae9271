// Steering: pick features (the clicked one, or all pinned ones), set / scale / add to their
// activations, run the model, and compare the top next tokens and the generated text before and
// after the intervention.

import { api } from "./api.js";
import { el, formatNumber, replaceChildren, showToken } from "./dom.js";
import { featureKey } from "./graph_data.js";

export class SteeringPanel {
  constructor(root, { setStatus, selectedFeature, pinnedFeatures }) {
    Object.assign(this, { root, setStatus, selectedFeature, pinnedFeatures });
    this.rows = [];
    this.result = null;
    this.available = false;
    this.reason = "";
  }

  configure(data, available, reason) {
    this.data = data;
    this.available = available;
    this.reason = reason;
    this.rows = [];
    this.result = null;
    this.render();
  }

  addNode(i) {
    const node = this.data.nodes[i];
    const key = featureKey(node);
    if (!key) return;
    if (this.rows.some((row) => row.id === node.node_id)) return;
    this.rows.push({ id: node.node_id, layer: key[0], feature: key[1], ctx: this.data.ctx[i], position: String(this.data.ctx[i]), op: "scale", value: 0, label: this.data.label(i) });
    this.render();
  }

  render() {
    const body = [el("h2", { text: "steering" })];
    if (!this.available) {
      replaceChildren(this.root, ...body, el("p", { class: "empty", text: this.reason }));
      return;
    }
    const table = el("table", { class: "steer-rows", id: "steer-rows" }, this.rows.map((row, k) => el("tr", {},
      el("td", { class: "name", title: row.id, text: row.label.length > 28 ? row.label.slice(0, 27) + "…" : row.label }),
      el("td", {}, select(["set", "scale", "add"], row.op, (v) => { row.op = v; })),
      el("td", {}, el("input", { type: "number", step: "any", value: String(row.value), class: "steer-value", onchange: (e) => { row.value = Number(e.target.value); } })),
      el("td", {}, select([String(row.ctx), "all"], row.position, (v) => { row.position = v; }, ["at its position", "every position"])),
      el("td", {}, el("button", { text: "×", title: "remove", onclick: () => { this.rows.splice(k, 1); this.render(); } })),
    )));
    const tokens = el("input", { id: "steer-tokens", type: "number", min: "0", max: "64", value: "12", style: { width: "4em" } });
    body.push(
      el("div", { class: "subgraph-actions" },
        el("button", { id: "steer-add-selected", text: "add clicked feature", onclick: () => { const i = this.selectedFeature(); if (i >= 0) this.addNode(i); } }),
        el("button", { text: "add pinned features", onclick: () => { for (const i of this.pinnedFeatures()) this.addNode(i); } }),
        el("label", {}, "generate ", tokens, " tokens"),
        el("button", { id: "steer-run", text: "run", disabled: !this.rows.length, onclick: () => this.run(Number(tokens.value) || 0) }),
      ),
      this.rows.length ? table : el("p", { class: "empty", text: "Add features, choose set / scale (0 = ablate) / add, then run." }),
      this.results(),
    );
    replaceChildren(this.root, ...body);
  }

  async run(maxNewTokens) {
    const interventions = this.rows.map((row) => ({
      layer: row.layer, feature: row.feature, op: row.op, value: Number(row.value) || 0,
      position: row.position === "all" ? "all" : Number(row.position),
    }));
    this.setStatus("steering …");
    try {
      this.result = await api.steer({ slug: this.data.slug, interventions, top_k: 10, max_new_tokens: Math.max(0, Math.min(64, maxNewTokens)) });
      this.setStatus(`steered: ${this.result.interventions.join("; ")}`);
    } catch (error) {
      this.result = null;
      this.setStatus(error.message, true);
    }
    this.render();
  }

  results() {
    const r = this.result;
    if (!r) return null;
    const before = new Map(r.before.top_logits.map((t) => [t.token_id, t.probability]));
    const table = (rows, other, id) => el("table", { id }, rows.map((t) => {
      const cells = [el("td", { class: "tok", text: showToken(t.token) }), el("td", { text: formatNumber(t.probability) })];
      if (other) {
        const change = other.has(t.token_id) ? t.probability - other.get(t.token_id) : null;
        cells.push(el("td", {
          class: change === null ? "up" : change >= 0 ? "up" : "down",
          text: change === null ? "new in top" : (change >= 0 ? "+" : "") + formatNumber(change),
        }));
      }
      return el("tr", {}, cells);
    }));
    return el("div", { class: "steer-results", id: "steer-results" },
      el("div", {}, el("h3", { text: "before" }), table(r.before.top_logits, null, "steer-before"),
        r.before.text !== null ? el("div", { class: "steer-text", id: "steer-text-before", text: r.before.text }) : null),
      el("div", {}, el("h3", { text: "after" }), table(r.after.top_logits, before, "steer-after"),
        r.after.text !== null ? el("div", { class: "steer-text", id: "steer-text-after", text: r.after.text }) : null),
    );
  }
}

function select(values, current, onChange, names = values) {
  return el("select", { onchange: (e) => onChange(e.target.value) },
    values.map((v, k) => el("option", { value: v, selected: v === current, text: names[k] })));
}

// The pinned subgraph: its live replacement / completeness scores, a small drawing of the pinned
// nodes and supernodes (a supernode's edges are the sums of its members' edges), and the list
// where items are labelled, grouped (button or key "g"), ungrouped and unpinned.

import { el, formatNumber, replaceChildren, svg } from "./dom.js";

export class SubgraphPanel {
  constructor(root, { state, onSelect, requestScores }) {
    Object.assign(this, { root, state, onSelect, requestScores });
    this.checked = new Set();
    this.scores = null;
    this.scoreMessage = "";
  }

  /** `pinned`: the ids the scores are for (the box's data-pins, which a test waits on). */
  setScores(scores, message = "", pinned = []) {
    this.scores = scores;
    this.scoreMessage = message;
    this.scoredPins = scores ? pinned.join(",") : "";
    this.renderScores();
  }

  /** Items: each supernode, then each pinned node outside a supernode. */
  items(data) {
    const items = [];
    for (const group of this.state.supernodes) {
      const members = group.members.map((id) => data.index.get(id)).filter((i) => i !== undefined);
      if (members.length) items.push({ key: `group:${group.name}`, group, members, label: group.name });
    }
    for (const id of this.state.pinned) {
      if (this.state.supernodeOf(id)) continue;
      const i = data.index.get(id);
      if (i !== undefined) items.push({ key: id, members: [i], label: data.label(i, this.state.nodeLabels) });
    }
    return items;
  }

  render(data) {
    this.data = data;
    const items = this.items(data);
    const validKeys = new Set(items.map((item) => item.key));
    for (const key of [...this.checked]) if (!validKeys.has(key)) this.checked.delete(key);
    this.scoreBox = el("div", { class: "scores", id: "subgraph-scores" });
    const nameInput = el("input", { id: "group-name", type: "text", placeholder: "supernode label", maxlength: "200" });
    this.nameInput = nameInput;
    const actions = el("div", { class: "subgraph-actions" },
      nameInput,
      el("button", { id: "group-button", text: "group (g)", onclick: () => this.groupChecked() }),
      el("button", { text: "unpin checked", onclick: () => this.unpinChecked() }),
      el("button", { text: "clear pins", disabled: !this.state.pinned.length, onclick: () => this.state.unpin([...this.state.pinned]) }),
    );
    // nothing pinned: one line, no space reserved for an empty drawing
    this.root.classList.toggle("empty-subgraph", !items.length);
    if (!items.length) {
      this.scoreBox = null;
      this.nameInput = null;
      replaceChildren(this.root, el("h2", { text: "subgraph" }),
        el("p", { class: "empty", text: "Pin nodes (shift-click, or p) to score a subgraph; hold g and click, or drag a node onto another, to group them into a supernode." }));
      return;
    }
    replaceChildren(this.root,
      el("h2", { text: `subgraph (${this.state.pinned.length} pinned)` }),
      this.scoreBox,
      el("div", { class: "subgraph-body" },
        this.drawing(data, items),
        el("div", { class: "subgraph-list" }, actions, this.list(data, items)),
      ),
    );
    this.renderScores();
  }

  renderScores() {
    if (!this.scoreBox) return;
    const s = this.scores;
    this.scoreBox.dataset.pins = this.scoredPins || "";
    if (!s) {
      replaceChildren(this.scoreBox, el("span", { class: "muted", text: this.scoreMessage || "pin nodes (ctrl/⌘/shift-click, or p) to score a subgraph" }));
      return;
    }
    replaceChildren(this.scoreBox,
      el("span", {}, "replacement ", el("span", { class: "value", id: "score-replacement", text: formatNumber(s.replacement) })),
      el("span", {}, "completeness ", el("span", { class: "value", id: "score-completeness", text: formatNumber(s.completeness) })),
      el("span", { class: "muted", text: `${s.n_pinned_features} pinned features · whole graph ` +
        (s.full_graph ? `${formatNumber(s.full_graph.replacement)} / ${formatNumber(s.full_graph.completeness)}` : "(computing…)") }),
    );
  }

  list(data, items) {
    return el("ul", { id: "subgraph-items" }, items.map((item) => {
      const box = el("input", { type: "checkbox", checked: this.checked.has(item.key), onchange: (event) => {
        if (event.target.checked) this.checked.add(item.key); else this.checked.delete(item.key);
      } });
      const label = el("input", { type: "text", value: item.label, title: "label", onchange: (event) => this.rename(item, event.target.value) });
      const tail = item.group
        ? [el("span", { class: "members", text: `${item.members.length} nodes` }), el("button", { text: "ungroup", onclick: () => this.state.ungroup(item.group) })]
        : [el("button", { text: "×", title: "unpin", onclick: () => this.state.unpin([item.key]) })];
      return el("li", { class: item.group ? "supernode" : "node", "data-key": item.key }, box, label, ...tail);
    }));
  }

  rename(item, text) {
    if (item.group) { if (!this.state.rename(item.group, text)) this.render(this.data); return; }
    this.state.nodeLabels[item.key] = text.trim();
    this.state.changed("labels");
  }

  groupChecked() {
    const keys = [...this.checked].map((key) => (key.startsWith("group:") ? key.slice(6) : key));
    const name = this.nameInput?.value.trim();
    const group = this.state.group(keys, name);
    if (group) this.checked.clear();
    return group;
  }

  unpinChecked() {
    const ids = [];
    for (const key of this.checked) {
      if (key.startsWith("group:")) ids.push(...(this.state.supernodes.find((g) => g.name === key.slice(6))?.members || []));
      else ids.push(key);
    }
    this.checked.clear();
    this.state.unpin(ids);
  }

  /**
   * SVG: items placed by mean (token position, layer) on labelled axes; edges = summed link weights
   * between items. Labels go right, left, above or below their shape, wherever they overlap no
   * other label or shape; one that fits nowhere is left out (its title still names it).
   */
  drawing(data, items) {
    const W = 520, H = 230, left = 40, right = 10, top = 12, bottom = 24;
    const box = svg("svg", { class: "subgraph-svg", id: "subgraph-svg", viewBox: `0 0 ${W} ${H}` });
    if (!items.length) return box;
    const owner = new Map();
    items.forEach((item, k) => item.members.forEach((i) => owner.set(i, k)));
    const sums = new Map();
    for (const [i, k] of owner) {
      for (const e of data.outgoing(i)) {
        const k2 = owner.get(data.linkTarget[e]);
        if (k2 === undefined || k2 === k) continue;
        const key = `${k}>${k2}`;
        sums.set(key, (sums.get(key) || 0) + data.linkWeight[e]);
      }
    }
    this.edgeSums = sums;
    const nRows = data.nLayers + 2;
    const colX = (c) => left + (c + 0.5) / data.nPos * (W - left - right);
    const rowY = (r) => H - bottom - (r + 0.5) / nRows * (H - top - bottom);
    this.axes(box, data, items, { W, H, left, bottom, nRows, colX, rowY });
    const pos = items.map((item) => {
      const mean = (f) => item.members.reduce((a, i) => a + f(i), 0) / item.members.length;
      return { x: colX(mean((i) => data.ctx[i])), y: rowY(mean((i) => data.layer[i] + 1)) };
    });
    // items on the same spot sit side by side
    const seen = new Map();
    for (const p of pos) {
      const key = `${Math.round(p.x / 16)}:${Math.round(p.y / 12)}`;
      const count = seen.get(key) || 0;
      seen.set(key, count + 1);
      p.x += (count % 2 ? 1 : -1) * Math.ceil(count / 2) * 18;
    }
    const maxAbs = Math.max(1e-12, ...[...sums.values()].map(Math.abs));
    for (const [key, w] of sums) {
      const [a, b] = key.split(">").map(Number);
      box.append(svg("line", {
        x1: pos[a].x, y1: pos[a].y, x2: pos[b].x, y2: pos[b].y,
        stroke: w < 0 ? "#c53030" : "#2b6cb0", "stroke-opacity": 0.75,
        "stroke-width": 0.6 + 5 * Math.abs(w) / maxAbs,
        "data-weight": w,
      }, svg("title", { text: `${items[a].label} → ${items[b].label}: ${formatNumber(w)}` })));
    }
    const taken = pos.map(({ x, y }) => ({ x0: x - 8, x1: x + 8, y0: y - 8, y1: y + 8 }));
    items.forEach((item, k) => {
      const { x, y } = pos[k];
      const first = item.members[0];
      const kind = item.group ? "supernode" : ["feature", "error", "token", "logit"][data.nodeKind[first]];
      const shape = kind === "feature"
        ? svg("circle", { cx: x, cy: y, r: 6 })
        : svg("rect", { x: x - 7, y: y - 7, width: 14, height: 14, rx: kind === "supernode" ? 4 : 1 });
      const text = item.label.length > 18 ? item.label.slice(0, 17) + "…" : item.label;
      const label = placeLabel(text, x, y, taken, { W, H });
      box.append(svg("g", { class: `item ${kind}`, "data-key": item.key, onclick: () => this.onSelect(first) },
        shape,
        label ? svg("text", { x: label.x, y: label.y, "text-anchor": label.anchor, text }) : null,
        svg("title", { text: item.label })));
    });
    return box;
  }

  /** Layer names up the left (Emb, L0, …, Logit) and the tokens of the used positions along the bottom. */
  axes(box, data, items, { W, H, left, bottom, nRows, colX, rowY }) {
    const axis = svg("g", { class: "axes" });
    const step = Math.max(1, Math.ceil(nRows / 10));
    for (let r = 0; r < nRows; r += step) {
      const name = r === 0 ? "Emb" : r === nRows - 1 ? "Logit" : `L${r - 1}`;
      axis.append(svg("text", { x: left - 6, y: rowY(r) + 3, "text-anchor": "end", class: "axis-label", text: name }));
    }
    if (nRows - 1 > 0 && (nRows - 1) % step) {
      axis.append(svg("text", { x: left - 6, y: rowY(nRows - 1) + 3, "text-anchor": "end", class: "axis-label", text: "Logit" }));
    }
    axis.append(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis-line" }));
    const used = new Set();
    for (const item of items) for (const i of item.members) used.add(data.ctx[i]);
    let lastRight = -Infinity;
    for (const c of [...used].sort((a, b) => a - b)) {
      const token = (data.tokens[c] ?? `pos ${c}`).replace(/\s/g, "·");
      const text = token.length > 10 ? token.slice(0, 9) + "…" : token;
      const half = text.length * CHAR_W / 2;
      if (colX(c) - half < lastRight + 4) continue; // would overlap the previous token label
      lastRight = colX(c) + half;
      axis.append(svg("text", { x: colX(c), y: H - bottom + 14, "text-anchor": "middle", class: "axis-label token", text }));
    }
    box.append(axis);
  }
}

// A conservative width of one character of the 11 px labels (for placing them without overlap).
const CHAR_W = 6.6;
const LINE_H = 13;

function placeLabel(text, x, y, taken, { W, H }) {
  const width = text.length * CHAR_W;
  const candidates = [
    { x: x + 10, y: y + 4, anchor: "start", x0: x + 9, x1: x + 11 + width },
    { x: x - 10, y: y + 4, anchor: "end", x0: x - 11 - width, x1: x - 9 },
    { x, y: y - 10, anchor: "middle", x0: x - width / 2 - 1, x1: x + width / 2 + 1, up: true },
    { x, y: y + 18, anchor: "middle", x0: x - width / 2 - 1, x1: x + width / 2 + 1, down: true },
  ];
  for (const c of candidates) {
    const y0 = c.up ? y - 10 - LINE_H + 3 : c.down ? y + 18 - LINE_H + 3 : y + 4 - LINE_H + 3;
    const rect = { x0: c.x0, x1: c.x1, y0, y1: y0 + LINE_H };
    if (rect.x0 < 0 || rect.x1 > W || rect.y0 < 0 || rect.y1 > H) continue;
    if (taken.some((t) => rect.x0 < t.x1 && t.x0 < rect.x1 && rect.y0 < t.y1 && t.y0 < rect.y1)) continue;
    taken.push(rect);
    return c;
  }
  return null;
}

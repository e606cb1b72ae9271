// The clicked node: what it is, and its incoming and outgoing links sorted by |weight| (largest
// first, sign shown by colour), each a link to the node at its other end.

import { el, formatNumber, replaceChildren } from "./dom.js";
import { KIND } from "./graph_data.js";

const SHOWN = 40;
const KIND_NAMES = ["feature", "error", "embedding", "logit"];

export class NodePanel {
  constructor(root, { onSelect, onTogglePin, onSteer }) {
    Object.assign(this, { root, onSelect, onTogglePin, onSteer });
  }

  clear() {
    replaceChildren(this.root, el("h2", { text: "node" }), el("p", { class: "empty", text: "Click a node to see its links." }));
  }

  show(data, i, { pinned, labels, visible, steering }) {
    const node = data.nodes[i];
    const facts = [
      KIND_NAMES[data.nodeKind[i]],
      data.nodeKind[i] === KIND.EMBEDDING ? null : data.nodeKind[i] === KIND.LOGIT ? "top" : `layer ${data.layer[i]}`,
      `pos ${data.ctx[i]} "${data.tokens[data.ctx[i]] ?? ""}"`,
      Number.isNaN(data.activation[i]) ? null : `act ${formatNumber(data.activation[i])}`,
      Number.isNaN(data.influence[i]) ? null : `influence ${formatNumber(data.influence[i])}`,
      node.token_prob ? `p ${formatNumber(node.token_prob)}` : null,
    ].filter(Boolean);
    const actions = el("div", { class: "node-actions" },
      el("button", { id: "pin-button", text: pinned ? "unpin" : "pin", onclick: () => this.onTogglePin(i) }),
      data.nodeKind[i] === KIND.FEATURE
        ? el("button", { id: "steer-add-button", text: "steer this feature", disabled: !steering, onclick: () => this.onSteer(i) })
        : null,
    );
    replaceChildren(this.root,
      el("h2", { text: "node" }),
      el("div", { class: "node-title", id: "node-title", text: data.label(i, labels) }),
      el("div", { class: "node-facts", text: `${node.node_id} · ${facts.join(" · ")}` }),
      actions,
      this.linkSection(data, i, "inputs", data.incoming(i), (e) => data.linkSource[e], labels, visible),
      this.linkSection(data, i, "outputs", data.outgoing(i), (e) => data.linkTarget[e], labels, visible),
    );
  }

  linkSection(data, i, name, links, other, labels, visible) {
    const sorted = Array.from(links).sort((a, b) => Math.abs(data.linkWeight[b]) - Math.abs(data.linkWeight[a]));
    const hidden = sorted.filter((e) => !visible[other(e)]).length;
    const list = el("ul", { class: "link-list", id: `${name}-list` });
    const max = sorted.length ? Math.abs(data.linkWeight[sorted[0]]) : 1;
    const render = (count) => {
      replaceChildren(list, sorted.slice(0, count).map((e) => {
        const w = data.linkWeight[e];
        const sign = w < 0 ? "neg" : "pos";
        const j = other(e);
        return el("li", { title: data.nodes[j].node_id, "data-node": data.nodes[j].node_id, onclick: () => this.onSelect(j) },
          el("span", { class: `weight ${sign}`, text: formatNumber(w) }),
          el("span", { class: `bar ${sign}`, style: { width: `${Math.max(2, (60 * Math.abs(w)) / max)}px` } }),
          el("span", { class: "name", text: data.label(j, labels) + (visible[j] ? "" : " (pruned from view)") }),
        );
      }));
    };
    render(SHOWN);
    const more = sorted.length > SHOWN
      ? el("button", { class: "more", text: `show all ${sorted.length}`, onclick: (event) => { render(sorted.length); event.target.remove(); } })
      : null;
    const heading = `${name} (${sorted.length}${hidden ? `, ${hidden} hidden by the filter` : ""})`;
    return el("div", {}, el("h3", { text: heading }), sorted.length ? list : el("p", { class: "empty", text: "none" }), more);
  }
}

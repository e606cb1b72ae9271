// A feature's card from the feature store: editable label, activation statistics, histogram,
// top/bottom logits and example windows (top activations, then one group per activation
// quantile) with each token shaded by the feature's activation on it.

import { api } from "./api.js";
import { el, formatNumber, replaceChildren, showToken, svg } from "./dom.js";

export class FeatureCardPanel {
  constructor(root, { onLabelSaved, setStatus }) {
    Object.assign(this, { root, onLabelSaved, setStatus });
    this.request = 0;
  }

  empty(message) {
    replaceChildren(this.root, el("h2", { text: "feature" }), el("p", { class: "empty", text: message }));
  }

  async show(layer, feature, { available, writable }) {
    if (!available) {
      this.empty("No feature store: start the server with --features FILE to see cards.");
      return;
    }
    const request = ++this.request;
    this.empty(`loading layer ${layer} feature ${feature} …`);
    let card;
    try {
      card = await api.feature(layer, feature);
    } catch (error) {
      if (request === this.request) this.empty(error.message);
      return;
    }
    if (request !== this.request) return; // another node was clicked meanwhile
    this.render(card, layer, feature, writable);
  }

  render(card, layer, feature, writable) {
    const input = el("input", { id: "label-input", type: "text", value: card.user_label || "", placeholder: card.auto_label || "label", maxlength: "500", disabled: !writable });
    const save = el("button", {
      id: "label-save", text: "save label", disabled: !writable,
      onclick: async () => {
        try {
          const saved = await api.setLabel(layer, feature, input.value);
          this.setStatus(`label of L${layer} #${feature} saved`);
          this.onLabelSaved(layer, feature, saved.label || card.auto_label || "");
        } catch (error) { this.setStatus(error.message, true); }
      },
    });
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") save.click(); });
    const stats = [
      `L${layer} #${feature}`,
      card.activation_frequency !== undefined ? `fires on ${formatNumber(100 * card.activation_frequency, 3)}% of tokens` : null,
      card.activation_count !== undefined ? `${card.activation_count} activations` : null,
      card.act_max !== undefined ? `max ${formatNumber(card.act_max)}` : null,
    ].filter(Boolean).join(" · ");
    const groups = card.examples_quantiles || [];
    const top = card.top_examples && card.top_examples.length ? card.top_examples : groups[0]?.examples || [];
    const actMax = card.act_max || Math.max(1e-9, ...top.flatMap((e) => e.tokens_acts_list || [0]));
    replaceChildren(this.root,
      el("h2", { text: "feature" }),
      el("div", { class: "card-label" }, input, save),
      el("div", { class: "card-stats", text: (card.auto_label ? `auto: ${card.auto_label} · ` : "") + stats }),
      el("div", { class: "card-columns" },
        el("div", {}, el("h3", { text: "activation histogram" }), histogram(card)),
        el("div", {},
          el("h3", { text: "top / bottom logits" }),
          el("div", { class: "card-columns" },
            logitList("logit-list top", "top-logits", card.top_logits, card.top_logit_values),
            logitList("logit-list bottom", "bottom-logits", card.bottom_logits, card.bottom_logit_values),
          ),
        ),
      ),
      el("h3", { text: "top activations" }),
      el("div", { id: "top-examples" }, top.slice(0, 8).map((e) => example(e, actMax))),
      groups.filter((g) => g !== groups[0] || !card.top_examples).map((group) =>
        el("details", {}, el("summary", { text: `${group.quantile_name} (${group.examples.length})` }),
          group.examples.slice(0, 6).map((e) => example(e, actMax)))),
    );
  }
}

function example(item, actMax) {
  const acts = item.tokens_acts_list || [];
  return el("div", { class: "example" }, (item.tokens || []).map((token, j) => {
    const a = acts[j] || 0;
    const alpha = Math.max(0, Math.min(1, a / actMax));
    return el("span", {
      class: j === item.train_token_ind ? "centre" : null,
      title: `activation ${formatNumber(a)}`,
      style: alpha > 0 ? { background: `rgba(221,107,32,${(0.12 + 0.78 * alpha).toFixed(3)})` } : {},
      text: String(token).replace(/\n/g, "⏎"),
    });
  }));
}

/** Histogram bars: `histogram` is a list of counts (equal-width bins over [act_min, act_max]),
 * or {counts, bin_edges}. */
function histogram(card) {
  const counts = Array.isArray(card.histogram) ? card.histogram : card.histogram?.counts || [];
  const box = svg("svg", { class: "histogram", viewBox: "0 0 200 64", preserveAspectRatio: "none", id: "histogram" });
  if (!counts.length) return el("p", { class: "empty", text: "no histogram" });
  const max = Math.max(...counts, 1);
  const w = 200 / counts.length;
  counts.forEach((count, b) => {
    const h = count > 0 ? Math.max(1, (60 * Math.log1p(count)) / Math.log1p(max)) : 0;
    box.append(svg("rect", { x: b * w + 0.3, y: 62 - h, width: Math.max(0.5, w - 0.6), height: h }, svg("title", { text: `${count}` })));
  });
  box.append(svg("line", { x1: 0, x2: 200, y1: 62.5, y2: 62.5, stroke: "#999", "stroke-width": 0.5 }));
  const low = card.act_min ?? 0, high = card.act_max ?? 0;
  return el("div", { class: "histogram-box" },
    el("div", { class: "hist-y", text: `count (log scale), max ${max}` }),
    box,
    el("div", { class: "hist-x", id: "histogram-axis" },
      el("span", { text: formatNumber(low) }), el("span", { text: `activation · ${formatNumber((low + high) / 2)}` }), el("span", { text: formatNumber(high) })));
}

/** Promoted (top) or suppressed (bottom) tokens, with their logit-lens values when the card has them. */
function logitList(cls, id, tokens = [], values = []) {
  return el("ol", { class: cls, id }, tokens.slice(0, 8).map((token, k) => el("li", {},
    showToken(token),
    typeof values?.[k] === "number" ? el("span", { class: "logit-value", text: ` ${formatNumber(values[k])}` }) : null)));
}

// Where each node goes: token position on x, layer on y (embeddings in the bottom row, logits in
// the top row), the nodes of one (layer, position) cell packed in a small grid, most influential
// first. Coordinates are CSS pixels of the graph pane at zoom 1.

import { KIND } from "./graph_data.js";

export const MARGIN = { left: 44, right: 14, top: 46, bottom: 58 };

/**
 * @param {GraphData} data
 * @param {Uint8Array} visible  1 for nodes to place
 * @returns {{x: Float32Array, y: Float32Array, r: Float32Array, rowY: number[], colX: number[],
 *            colW: number, rowH: number, width: number, height: number}}
 */
export function computeLayout(data, visible, width, height) {
  const n = data.nodes.length;
  const x = new Float32Array(n).fill(NaN);
  const y = new Float32Array(n).fill(NaN);
  const r = new Float32Array(n);
  const nRows = data.nLayers + 2;
  const innerW = Math.max(60, width - MARGIN.left - MARGIN.right);
  const innerH = Math.max(60, height - MARGIN.top - MARGIN.bottom);
  const colW = innerW / data.nPos;
  const rowH = innerH / nRows;
  const colX = Array.from({ length: data.nPos }, (_, c) => MARGIN.left + (c + 0.5) * colW);
  const rowY = Array.from({ length: nRows }, (_, row) => MARGIN.top + (nRows - 1 - row + 0.5) * rowH);

  // Bucket visible nodes by cell; logits get their own row-wide treatment.
  const cells = new Map();
  const logits = [];
  for (let i = 0; i < n; i++) {
    if (!visible[i]) continue;
    if (data.nodeKind[i] === KIND.LOGIT) { logits.push(i); continue; }
    const row = data.layer[i] + 1; // embeddings (-1) -> row 0
    const key = row * data.nPos + data.ctx[i];
    let cell = cells.get(key);
    if (!cell) cells.set(key, (cell = []));
    cell.push(i);
  }
  const byInfluence = (a, b) => {
    const ia = data.influence[a], ib = data.influence[b];
    if (Number.isNaN(ia)) return Number.isNaN(ib) ? a - b : 1;
    if (Number.isNaN(ib)) return -1;
    return ia - ib || a - b;
  };
  const boxW = colW * 0.86;
  const boxH = rowH * 0.74;
  for (const [key, members] of cells) {
    const row = Math.floor(key / data.nPos);
    const col = key % data.nPos;
    members.sort(byInfluence);
    const k = members.length;
    const cols = Math.max(1, Math.min(k, Math.ceil(Math.sqrt((k * boxW) / Math.max(boxH, 1)))));
    const rows = Math.ceil(k / cols);
    const dx = Math.min(boxW / cols, 16);
    const dy = Math.min(boxH / rows, 16);
    const radius = Math.max(1.6, Math.min(6, Math.min(dx, dy) * 0.38));
    const x0 = colX[col] - ((cols - 1) * dx) / 2;
    const y0 = rowY[row] - ((rows - 1) * dy) / 2;
    members.forEach((i, j) => {
      x[i] = x0 + (j % cols) * dx;
      y[i] = y0 + Math.floor(j / cols) * dy;
      r[i] = data.nodeKind[i] === KIND.EMBEDDING ? Math.max(radius, 4) : Math.min(radius * importance(data, i), Math.min(dx, dy) * 0.5);
    });
  }
  // Logits: most probable at the right, ending at the last position's column.
  logits.sort((a, b) => (data.nodes[b].token_prob || 0) - (data.nodes[a].token_prob || 0));
  const lastX = colX[data.nPos - 1] ?? MARGIN.left + innerW / 2;
  const spacing = Math.min(84, Math.max(10, (lastX - MARGIN.left) / Math.max(1, logits.length - 1)));
  logits.forEach((i, j) => {
    x[i] = lastX - j * spacing;
    y[i] = rowY[nRows - 1];
    r[i] = 5;
  });
  return { x, y, r, rowY, colX, colW, rowH, width, height, logitSpacing: spacing };
}

/**
 * Radius factor by influence: a node's `influence` is the cumulative share of the graph's influence
 * at its rank, so the most influential nodes have the smallest values and are drawn largest.
 */
function importance(data, i) {
  const value = data.influence[i];
  return Number.isNaN(value) ? 1 : Math.max(0.6, Math.min(1.5, 1.5 - value));
}

/** A uniform grid over node positions for hit testing (nearest node under the pointer). */
export class HitGrid {
  constructor(layout, visible, cell = 12) {
    this.cell = cell;
    this.layout = layout;
    this.buckets = new Map();
    const { x, y } = layout;
    for (let i = 0; i < x.length; i++) {
      if (!visible[i] || Number.isNaN(x[i])) continue;
      const key = this.key(Math.floor(x[i] / cell), Math.floor(y[i] / cell));
      let bucket = this.buckets.get(key);
      if (!bucket) this.buckets.set(key, (bucket = []));
      bucket.push(i);
    }
  }

  key(cx, cy) { return cx * 100003 + cy; }

  /** The node nearest to (px, py) within its radius + slack, or -1. */
  find(px, py, slack = 4) {
    const { x, y, r } = this.layout;
    const cx = Math.floor(px / this.cell);
    const cy = Math.floor(py / this.cell);
    let best = -1;
    let bestD = Infinity;
    for (let gx = cx - 1; gx <= cx + 1; gx++) {
      for (let gy = cy - 1; gy <= cy + 1; gy++) {
        for (const i of this.buckets.get(this.key(gx, gy)) || []) {
          const d = Math.hypot(x[i] - px, y[i] - py);
          if (d <= r[i] + slack && d < bestD) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }
}

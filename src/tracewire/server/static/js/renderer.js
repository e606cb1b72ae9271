// Canvas drawing of the link graph, and pointer interaction (hover, click, pan, zoom, and dragging
// a node onto another one, which groups them into a supernode).
//
// Two stacked canvases: the base one holds every visible link and node and is redrawn only when
// the graph, the filter or the view changes; the overlay holds what changes on every pointer move
// (hovered/selected node, its links, pins), so a hover never redraws the links. Links are drawn
// in a few batches (sign x width level). With WebGL on a GPU (webgl_links.js) all links are one
// draw call, copied onto the base canvas; without it (or with `?links=canvas`), canvas 2D
// draws the many weak links as one path of 1-pixel hairlines, which software rasterisation draws
// fast, the few strong ones wider, in chunks, and bundles them above BUNDLE_ABOVE links (wide
// strokes of 100k links take seconds to rasterise in Chromium without a GPU). During a pan or zoom
// the drawn bitmaps are moved with a CSS transform and redrawn once the gesture pauses.

import { KIND } from "./graph_data.js";
import { computeLayout, HitGrid, MARGIN } from "./layout.js";
import { WebglLinks } from "./webgl_links.js";

// Link width levels are linear in |weight| / max |weight|; the lowest ones are 1-pixel hairlines.
const WIDTH_LEVELS = 6;
// Above this many links to draw, a canvas 2D base layer draws them bundled by cell (see
// drawBundles); with WebGL every link is drawn.
const BUNDLE_ABOVE = 150000;
// Hovered links are stroked in this many width classes (one path each) instead of one by one.
const HOVER_WIDTHS = 8;
const HOVER_WIDE = 200;
const THIN_LEVELS = 3;
const COLORS = {
  pos: "43,108,176", neg: "197,48,48",
  feature: "#f6ad55", featureStroke: "#9c4221",
  error: "#cbd5e0", errorStroke: "#718096",
  embedding: "#9ae6b4", embeddingStroke: "#2f855a",
  logit: "#d6bcfa", logitStroke: "#553c9a",
  pin: "#6b46c1", selected: "#1a202c", band: "#f7f5f0", grid: "#ebe7de", text: "#4a4740",
};
const LOGIT_CLERP = /^Output "(.*)" \(p=([^)]*)\)$/s;

export class Renderer {
  constructor({ pane, base, overlay, tooltip, onHover, onClick, onDrop }) {
    Object.assign(this, { pane, base, overlay, tooltip, onHover, onClick, onDrop });
    this.view = { k: 1, tx: 0, ty: 0 };
    this.drawnView = { ...this.view };
    this.data = null;
    this.visible = null;
    this.focus = { selected: -1, hovered: -1, pinned: new Set() };
    this.labelOf = (i) => String(i);
    this.redrawTimer = null;
    this.pointer = null;
    // WebGL draws the links on a GPU; `?links=canvas` forces the canvas 2D path everywhere and
    // `?links=webgl` WebGL even on a software rasteriser (tests, comparisons)
    const linksParam = new URLSearchParams(window.location.search).get("links");
    this.webgl = linksParam === "canvas" ? null : WebglLinks.create({ force: linksParam === "webgl" });
    this.bundleAbove = this.webgl ? Infinity : BUNDLE_ABOVE;
    this.bindEvents();
    new ResizeObserver(() => this.data && this.refresh({ relayout: true })).observe(pane);
  }

  /** Show `data` with the given visibility mask (1 = shown). */
  setGraph(data, visible) {
    this.data = data;
    this.visible = visible;
    this.view = { k: 1, tx: 0, ty: 0 };
    const levels = new Uint8Array(data.nLinks);
    for (let e = 0; e < data.nLinks; e++) {
      const level = Math.min(WIDTH_LEVELS - 1, Math.floor((Math.abs(data.linkWeight[e]) / data.maxAbsWeight) * WIDTH_LEVELS));
      levels[e] = level + (data.linkWeight[e] < 0 ? WIDTH_LEVELS : 0);
    }
    this.linkBucket = levels;
    this.selection = null;
    this.refresh({ relayout: true });
  }

  /** Draw at most `limit` links, the strongest by |weight| (Infinity: all). */
  setLinkLimit(limit) {
    this.linkLimit = limit;
    this.refresh();
  }

  /**
   * Ids of the visible links to draw: all of them, or the `limit` strongest by |weight|. The cut is
   * the limit-th largest |weight| from one native sort of a Float32Array (a comparator sort of
   * 700k ids takes most of a second); kept until the graph, the mask or the limit changes.
   */
  linksToDraw(limit) {
    const { data, visible } = this;
    const cached = this.selection;
    if (cached && cached.visible === visible && cached.limit === limit) return cached.links;
    const ids = new Int32Array(data.nLinks);
    let n = 0;
    for (let e = 0; e < data.nLinks; e++) if (visible[data.linkSource[e]] && visible[data.linkTarget[e]]) ids[n++] = e;
    let links = ids.subarray(0, n);
    if (limit < n) {
      const w = data.linkWeight;
      const magnitudes = new Float32Array(n);
      for (let j = 0; j < n; j++) magnitudes[j] = Math.abs(w[links[j]]);
      const cut = magnitudes.sort()[n - limit];
      const strongest = new Int32Array(limit);
      let kept = 0;
      for (let j = 0; j < n; j++) if (Math.abs(w[links[j]]) > cut) strongest[kept++] = links[j];
      for (let j = 0; j < n && kept < limit; j++) if (Math.abs(w[links[j]]) === cut) strongest[kept++] = links[j];
      links = strongest;
    }
    this.selection = { visible, limit, links };
    return links;
  }

  setVisible(visible) {
    this.visible = visible;
    this.selection = null;
    this.refresh({ relayout: true });
  }

  setFocus(focus) {
    Object.assign(this.focus, focus);
    this.scheduleOverlay();
  }

  refresh({ relayout = false } = {}) {
    if (!this.data) return;
    this.resizeCanvases();
    if (relayout) {
      this.layout = computeLayout(this.data, this.visible, this.cssWidth, this.cssHeight);
      this.grid = new HitGrid(this.layout, this.visible);
    }
    this.drawBase();
    this.drawOverlay();
  }

  resizeCanvases() {
    const rect = this.pane.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssWidth = Math.max(100, rect.width);
    this.cssHeight = Math.max(100, rect.height);
    for (const canvas of [this.base, this.overlay]) {
      const w = Math.round(this.cssWidth * dpr);
      const h = Math.round(this.cssHeight * dpr);
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    }
    this.dpr = dpr;
  }

  /** Screen position (CSS px, relative to the pane) of node i, or null if it is not shown. */
  screenPosition(i) {
    if (!this.layout || i < 0 || Number.isNaN(this.layout.x[i])) return null;
    return { x: this.layout.x[i] * this.view.k + this.view.tx, y: this.layout.y[i] * this.view.k + this.view.ty };
  }

  // ------------------------------------------------------------------------------ drawing
  drawBase() {
    const { data, layout } = this;
    const ctx = this.base.getContext("2d");
    const { k, tx, ty } = this.view;
    this.drawnView = { ...this.view };
    this.base.style.transform = "";
    this.overlay.style.transform = "";
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, this.cssWidth, this.cssHeight);
    ctx.setTransform(this.dpr * k, 0, 0, this.dpr * k, this.dpr * tx, this.dpr * ty);
    this.drawAxes(ctx, k);

    // Links, batched by sign and width level; faint when there are many.
    const shown = [];
    for (let b = 0; b < 2 * WIDTH_LEVELS; b++) shown.push([]);
    const links = this.linksToDraw(this.linkLimit ?? Infinity);
    for (let j = 0; j < links.length; j++) shown[this.linkBucket[links[j]]].push(links[j]);
    const count = links.length;
    this.visibleLinks = count;
    this.bundles = null;
    if (count > this.bundleAbove) {
      this.drawBundles(ctx, k, shown);
      this.drawNodes(ctx, k);
      return;
    }
    const baseAlpha = Math.min(0.55, Math.max(0.02, 7 / Math.sqrt(Math.max(count, 1))));
    const alphaOf = (level) => Math.min(0.9, baseAlpha * (1 + level * 0.8));
    if (this.webgl) {
      this.drawLinksWebgl(ctx, shown, alphaOf);
      this.drawNodes(ctx, k);
      return;
    }
    const { x, y } = layout;
    const hairline = 1 / (k * this.dpr); // Skia rasterises 1-device-pixel lines on a fast path
    for (let level = 0; level < WIDTH_LEVELS; level++) {
      for (const sign of [1, 0]) { // positive links on top of negative ones
        const links = shown[level + sign * WIDTH_LEVELS];
        if (!links.length) continue;
        ctx.strokeStyle = `rgba(${sign ? COLORS.neg : COLORS.pos},${alphaOf(level)})`;
        ctx.lineWidth = level < THIN_LEVELS ? hairline : (0.6 + (level - THIN_LEVELS + 1)) / k;
        // wide strokes of one huge path are slow to rasterise: stroke them in chunks
        const chunk = level < THIN_LEVELS ? links.length : 512;
        for (let start = 0; start < links.length; start += chunk) {
          ctx.beginPath();
          for (let j = start; j < Math.min(links.length, start + chunk); j++) {
            const e = links[j];
            const s = data.linkSource[e], t = data.linkTarget[e];
            ctx.moveTo(x[s], y[s]);
            ctx.lineTo(x[t], y[t]);
          }
          ctx.stroke();
        }
      }
    }
    this.drawNodes(ctx, k);
  }

  /**
   * The same batches as the canvas 2D path (width level, negative under positive), drawn by the
   * WebGL layer and copied onto the base canvas in device pixels, between the axes and the nodes.
   */
  drawLinksWebgl(ctx, shown, alphaOf) {
    const { data } = this;
    const { x, y } = this.layout;
    const batches = [];
    for (let level = 0; level < WIDTH_LEVELS; level++) {
      for (const sign of [1, 0]) {
        const links = shown[level + sign * WIDTH_LEVELS];
        if (!links.length) continue;
        const rgb = (sign ? COLORS.neg : COLORS.pos).split(",").map(Number);
        const width = level < THIN_LEVELS ? 1 / this.dpr : 0.6 + (level - THIN_LEVELS + 1);
        batches.push({ links, rgba: [...rgb, Math.round(255 * alphaOf(level))], width });
      }
    }
    const endsOf = (e, ends) => {
      const s = data.linkSource[e], t = data.linkTarget[e];
      ends[0] = x[s]; ends[1] = y[s]; ends[2] = x[t]; ends[3] = y[t];
    };
    const drawn = this.webgl.draw({
      batches, endsOf, view: this.view, cssWidth: this.cssWidth, cssHeight: this.cssHeight, dpr: this.dpr,
    });
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(drawn, 0, 0);
    ctx.restore();
  }

  /**
   * Level of detail for very many links (a dense 2k-node graph has ~700k): links are bundled by
   * the (layer, position) cells of their ends, positive and negative apart, and each bundle is one
   * line between the cells' centroids, as wide as its summed |weight|. Hundreds of thousands of
   * overlapping hairlines draw as a grey haze that takes seconds to rasterise in software; a few
   * thousand bundles show where the weight flows in milliseconds. Hover and click still draw the
   * node's exact links on the overlay.
   */
  drawBundles(ctx, k, shown) {
    const { data, layout, visible } = this;
    const { x, y } = layout;
    const nCols = data.nPos;
    const nCells = (data.nLayers + 2) * nCols;
    const cellOf = (i) => (data.layer[i] + 1) * nCols + data.ctx[i];
    const cx = new Float64Array(nCells), cy = new Float64Array(nCells), cn = new Int32Array(nCells);
    for (let i = 0; i < data.nodes.length; i++) {
      if (!visible[i]) continue;
      const c = cellOf(i);
      cx[c] += x[i]; cy[c] += y[i]; cn[c]++;
    }
    // summed weight per (source cell, target cell, sign): in one typed array when the cell pairs
    // are few (a Map of 700k keyed updates takes several times longer), else in a Map
    const pairs = nCells * nCells;
    const table = pairs <= 1 << 20 ? new Float64Array(2 * pairs) : null;
    const sparse = table ? null : new Map();
    const { linkSource, linkTarget, linkWeight } = data;
    for (const links of shown) {
      for (let j = 0; j < links.length; j++) {
        const e = links[j], w = linkWeight[e];
        const slot = 2 * (cellOf(linkSource[e]) * nCells + cellOf(linkTarget[e])) + (w < 0 ? 1 : 0);
        if (table) table[slot] += w;
        else sparse.set(slot, (sparse.get(slot) ?? 0) + w);
      }
    }
    const sumAt = (slot) => (table ? table[slot] : sparse.get(slot) ?? 0);
    const keys = table ? Array.from({ length: pairs }, (_, key) => key) : [...new Set([...sparse.keys()].map((slot) => slot >> 1))];
    let maxAbs = 1e-30;
    this.bundles = [];
    for (const key of keys) {
      const positive = sumAt(2 * key), negative = sumAt(2 * key + 1);
      if (positive === 0 && negative === 0) continue;
      maxAbs = Math.max(maxAbs, positive, -negative);
      this.bundles.push({ source: Math.floor(key / nCells), target: key % nCells, positive, negative });
    }
    for (const sign of [1, 0]) { // positive on top
      ctx.strokeStyle = `rgba(${sign ? COLORS.neg : COLORS.pos},0.45)`;
      for (const bundle of this.bundles) {
        const w = sign ? bundle.negative : bundle.positive;
        if (w === 0) continue;
        const a = bundle.source, b = bundle.target;
        ctx.beginPath();
        ctx.moveTo(cx[a] / cn[a], cy[a] / cn[a]);
        ctx.lineTo(cx[b] / cn[b], cy[b] / cn[b]);
        ctx.lineWidth = (0.4 + 5 * Math.sqrt(Math.abs(w) / maxAbs)) / k;
        ctx.stroke();
      }
    }
  }

  drawAxes(ctx, k) {
    const { data, layout } = this;
    const nRows = data.nLayers + 2;
    const left = MARGIN.left - 6;
    const right = layout.width - MARGIN.right + 6;
    ctx.fillStyle = COLORS.band;
    for (let row = 0; row < nRows; row += 2) {
      ctx.fillRect(left, layout.rowY[row] - layout.rowH / 2, right - left, layout.rowH);
    }
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1 / k;
    ctx.beginPath();
    for (let c = 1; c < data.nPos; c++) {
      const xc = layout.colX[c] - layout.colW / 2;
      ctx.moveTo(xc, MARGIN.top);
      ctx.lineTo(xc, layout.height - MARGIN.bottom);
    }
    ctx.stroke();
    const font = (px) => `${px / Math.max(k, 0.5)}px system-ui, sans-serif`;
    ctx.fillStyle = COLORS.text;
    ctx.font = font(11);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const rowStep = Math.max(1, Math.ceil(14 / (layout.rowH * k)));
    for (let row = 0; row < nRows; row++) {
      const name = row === 0 ? "Emb" : row === nRows - 1 ? "Logit" : `L${row - 1}`;
      if (row !== 0 && row !== nRows - 1 && (row - 1) % rowStep !== 0) continue;
      ctx.fillText(name, MARGIN.left - 10, layout.rowY[row]);
    }
    // Tokens under their columns; tilted when columns are narrow.
    const narrow = layout.colW * k < 48;
    const maxChars = narrow ? 14 : Math.max(3, Math.floor((layout.colW * k) / 7));
    ctx.font = font(11);
    const baseY = layout.height - MARGIN.bottom + 14;
    const step = Math.max(1, Math.ceil(12 / (layout.colW * k)));
    for (let c = 0; c < data.nPos; c += step) {
      let token = (data.tokens[c] ?? String(c)).replace(/\n/g, "⏎");
      if (token.length > maxChars) token = token.slice(0, maxChars - 1) + "…";
      ctx.save();
      ctx.translate(layout.colX[c], baseY);
      if (narrow) { ctx.rotate(-Math.PI / 4); ctx.textAlign = "right"; } else ctx.textAlign = "center";
      ctx.textBaseline = "top";
      ctx.fillText(token, 0, 0);
      ctx.restore();
    }
  }

  drawNodes(ctx, k) {
    const { data, visible } = this;
    const { x, y, r } = this.layout;
    const shown = [];
    for (let i = 0; i < data.nodes.length; i++) if (visible[i]) shown.push(i);
    this.drawShapes(ctx, k, shown, 0);
    // logit labels above the top row
    ctx.fillStyle = COLORS.text;
    ctx.font = `${11 / Math.max(k, 0.5)}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    const tilt = this.layout.logitSpacing * k < 70;
    for (const i of shown) {
      if (data.nodeKind[i] !== KIND.LOGIT) continue;
      const clerp = String(data.nodes[i].clerp || "");
      const match = LOGIT_CLERP.exec(clerp);
      const text = match ? `${match[1].replace(/\n/g, "⏎")} ${Number(match[2]).toFixed(2)}` : clerp || data.nodes[i].node_id;
      ctx.save();
      ctx.translate(x[i], y[i] - r[i] - 3 / k);
      if (tilt) { ctx.rotate(-Math.PI / 5); ctx.textAlign = "left"; } else ctx.textAlign = "center";
      ctx.fillText(text, 0, 0);
      ctx.restore();
    }
  }

  /** Nodes as their kind's shape: features circles; errors, embeddings and logits squares. */
  drawShapes(ctx, k, indices, grow) {
    const { data } = this;
    const { x, y, r } = this.layout;
    ctx.lineWidth = 0.8 / k;
    for (const [kind, fill, stroke] of [
      [KIND.ERROR, COLORS.error, COLORS.errorStroke],
      [KIND.EMBEDDING, COLORS.embedding, COLORS.embeddingStroke],
      [KIND.LOGIT, COLORS.logit, COLORS.logitStroke],
      [KIND.FEATURE, COLORS.feature, COLORS.featureStroke],
    ]) {
      ctx.beginPath();
      for (const i of indices) {
        if (data.nodeKind[i] !== kind) continue;
        const radius = r[i] + grow;
        if (kind === KIND.FEATURE) { ctx.moveTo(x[i] + radius, y[i]); ctx.arc(x[i], y[i], radius, 0, 2 * Math.PI); }
        else ctx.rect(x[i] - radius, y[i] - radius, 2 * radius, 2 * radius);
      }
      ctx.fillStyle = fill; ctx.fill();
      ctx.strokeStyle = stroke; ctx.stroke();
    }
  }

  scheduleOverlay() {
    if (this.overlayPending) return;
    this.overlayPending = true;
    requestAnimationFrame(() => { this.overlayPending = false; this.drawOverlay(); });
  }

  drawOverlay() {
    if (!this.data) return;
    const { data, layout, visible } = this;
    const { x, y, r } = layout;
    const ctx = this.overlay.getContext("2d");
    const { k, tx, ty } = this.drawnView;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, this.cssWidth, this.cssHeight);
    ctx.setTransform(this.dpr * k, 0, 0, this.dpr * k, this.dpr * tx, this.dpr * ty);
    const { selected, hovered, pinned } = this.focus;
    const focusNode = hovered >= 0 ? hovered : selected;
    if (focusNode >= 0 && visible[focusNode]) {
      ctx.fillStyle = "rgba(255,255,255,0.62)";
      ctx.fillRect(-tx / k, -ty / k, this.cssWidth / k, this.cssHeight / k);
      const neighbours = [];
      // One path per (sign, width class): a hub's thousands of links are a few strokes. Only its
      // HOVER_WIDE strongest links are wide; the rest are hairlines, which software rasterisation
      // draws fast (1,400 wide strokes take ~180 ms).
      const links = [];
      for (const list of [data.incoming(focusNode), data.outgoing(focusNode)]) {
        for (const e of list) {
          const s = data.linkSource[e], t = data.linkTarget[e];
          if (!visible[s] || !visible[t]) continue;
          links.push(e);
          neighbours.push(s === focusNode ? t : s);
        }
      }
      const magnitudes = Float32Array.from(links, (e) => Math.abs(data.linkWeight[e])).sort();
      const wideFrom = links.length > HOVER_WIDE ? magnitudes[links.length - HOVER_WIDE] : 0;
      const classes = Array.from({ length: 2 * (HOVER_WIDTHS + 1) }, () => []); // class 0: hairlines
      for (const e of links) {
        const w = data.linkWeight[e];
        const level = Math.round(Math.sqrt(Math.abs(w) / data.maxAbsWeight) * (HOVER_WIDTHS - 1));
        const width = Math.abs(w) >= wideFrom ? 1 + Math.min(HOVER_WIDTHS - 1, level) : 0;
        classes[width + (w < 0 ? HOVER_WIDTHS + 1 : 0)].push(e);
      }
      classes.forEach((group, c) => {
        if (!group.length) return;
        const width = c % (HOVER_WIDTHS + 1);
        ctx.beginPath();
        for (const e of group) {
          const s = data.linkSource[e], t = data.linkTarget[e];
          ctx.moveTo(x[s], y[s]);
          ctx.lineTo(x[t], y[t]);
        }
        ctx.strokeStyle = `rgba(${c > HOVER_WIDTHS ? COLORS.neg : COLORS.pos},${width ? 0.85 : 0.6})`;
        ctx.lineWidth = width ? (0.8 + (5 * (width - 1)) / (HOVER_WIDTHS - 1)) / k : 1 / (k * this.dpr);
        ctx.stroke();
      });
      neighbours.push(focusNode);
      this.drawShapes(ctx, k, neighbours, 1 / k);
    }
    const ring = (i, color, width, extra) => {
      if (i < 0 || !visible[i]) return;
      ctx.beginPath();
      ctx.arc(x[i], y[i], r[i] + extra / k, 0, 2 * Math.PI);
      ctx.strokeStyle = color;
      ctx.lineWidth = width / k;
      ctx.stroke();
    };
    for (const i of pinned) ring(i, COLORS.pin, 2.2, 2.5);
    ring(hovered, COLORS.text, 1.5, 2);
    ring(selected, COLORS.selected, 2.5, 3.5);
    const drag = this.pointer?.node >= 0 && this.pointer.dragging ? this.pointer : null;
    if (drag) {
      ring(drag.node, COLORS.pin, 2.5, 3.5);
      ctx.beginPath();
      ctx.moveTo(x[drag.node], y[drag.node]);
      ctx.lineTo((drag.px - tx) / k, (drag.py - ty) / k);
      ctx.setLineDash([6 / k, 4 / k]);
      ctx.strokeStyle = COLORS.pin;
      ctx.lineWidth = 2 / k;
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  // ------------------------------------------------------------------------------ pointer
  bindEvents() {
    const canvas = this.overlay;
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      // pressed on a node: a drag carries the node (drop it on another to group them); else it pans
      this.pointer = { x: event.clientX, y: event.clientY, view: { ...this.view }, dragging: false, node: this.nodeAt(event) };
    });
    canvas.addEventListener("pointermove", (event) => {
      if (this.pointer) {
        const dx = event.clientX - this.pointer.x;
        const dy = event.clientY - this.pointer.y;
        if (!this.pointer.dragging && Math.hypot(dx, dy) > 4) this.pointer.dragging = true;
        if (this.pointer.dragging && this.pointer.node >= 0) {
          Object.assign(this.pointer, this.local(event));
          this.hover(event);
          this.scheduleOverlay();
          return;
        }
        if (this.pointer.dragging) {
          this.view.tx = this.pointer.view.tx + dx;
          this.view.ty = this.pointer.view.ty + dy;
          this.applyPreviewTransform();
          return;
        }
      }
      this.hover(event);
    });
    canvas.addEventListener("pointerup", (event) => {
      const pointer = this.pointer;
      this.pointer = null;
      if (!pointer) return;
      if (pointer.dragging && pointer.node >= 0) {
        const target = this.nodeAt(event);
        if (target >= 0 && target !== pointer.node) this.onDrop?.(pointer.node, target);
        this.scheduleOverlay();
        return;
      }
      if (pointer.dragging) { this.scheduleRedraw(0); return; }
      const i = this.nodeAt(event);
      this.onClick(i, event);
    });
    canvas.addEventListener("pointerleave", () => { this.tooltip.hidden = true; this.onHover(-1); });
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const { px, py } = this.local(event);
      const factor = Math.exp(-event.deltaY * 0.0015);
      const k = Math.min(40, Math.max(0.3, this.view.k * factor));
      const applied = k / this.view.k;
      this.view.tx = px - (px - this.view.tx) * applied;
      this.view.ty = py - (py - this.view.ty) * applied;
      this.view.k = k;
      this.applyPreviewTransform();
      this.scheduleRedraw(140);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => { this.view = { k: 1, tx: 0, ty: 0 }; this.scheduleRedraw(0); });
  }

  local(event) {
    // the canvas may be CSS-transformed during a gesture: measure against the pane instead
    const paneRect = this.pane.getBoundingClientRect();
    return { px: event.clientX - paneRect.left, py: event.clientY - paneRect.top };
  }

  nodeAt(event) {
    if (!this.grid) return -1;
    const { px, py } = this.local(event);
    const wx = (px - this.view.tx) / this.view.k;
    const wy = (py - this.view.ty) / this.view.k;
    return this.grid.find(wx, wy, 4 / this.view.k);
  }

  hover(event) {
    const i = this.nodeAt(event);
    if (i >= 0) {
      const { px, py } = this.local(event);
      this.tooltip.textContent = this.labelOf(i);
      this.tooltip.hidden = false;
      this.tooltip.style.left = `${Math.min(px + 14, this.cssWidth - 200)}px`;
      this.tooltip.style.top = `${py + 14}px`;
    } else this.tooltip.hidden = true;
    if (i !== this.focus.hovered) this.onHover(i);
  }

  applyPreviewTransform() {
    const s = this.view.k / this.drawnView.k;
    const dx = this.view.tx - this.drawnView.tx * s;
    const dy = this.view.ty - this.drawnView.ty * s;
    const transform = `translate(${dx}px, ${dy}px) scale(${s})`;
    this.base.style.transform = transform;
    this.overlay.style.transform = transform;
  }

  scheduleRedraw(ms) {
    clearTimeout(this.redrawTimer);
    this.redrawTimer = setTimeout(() => { this.drawBase(); this.drawOverlay(); }, ms);
  }
}

// One attribution graph in the browser: nodes (Neuronpedia objects) plus typed arrays for what the
// renderer and the panels read per node and per link, and each node's incoming and outgoing links
// (CSR: link ids grouped by node), so a click lists a node's links without scanning all of them.

import { api } from "./api.js";

export const KIND = { FEATURE: 0, ERROR: 1, EMBEDDING: 2, LOGIT: 3 };
const LINKS_PAGE = 250000;

function nodeKind(featureType) {
  if (featureType === "embedding") return KIND.EMBEDDING;
  if (featureType === "logit") return KIND.LOGIT;
  if (typeof featureType === "string" && featureType.includes("error")) return KIND.ERROR;
  return KIND.FEATURE;
}

/**
 * (layer, feature index) of a feature node from its id "{layer}_{feature}_{pos}", or null.
 * The same rule as feature_key() in src/tracewire/graph/neuronpedia_ids.py (the node-id codec,
 * which also documents the kind mapping: Python NodeKind TOKEN/TARGET = KIND.EMBEDDING/LOGIT here).
 */
export function featureKey(node) {
  if (nodeKind(node.feature_type) !== KIND.FEATURE) return null;
  const parts = String(node.node_id).split("_");
  if (parts.length !== 3) return null;
  const layer = Number(parts[0]);
  const feature = Number(parts[1]);
  if (!Number.isInteger(layer) || !Number.isInteger(feature) || layer < 0 || feature < 0) return null;
  return [layer, feature];
}

export class GraphData {
  /**
   * @param {object} spec  {origin: "server"|"file", slug, kind, metadata, qParams, settings, nodes,
   *                        sources, targets, weights} (links as Int32Array/Float32Array columns)
   */
  constructor(spec) {
    Object.assign(this, {
      origin: spec.origin,
      slug: spec.slug,
      kind: spec.kind,
      metadata: spec.metadata || {},
      qParams: spec.qParams || {},
      settings: spec.settings || {},
      nodes: spec.nodes,
      linkSource: spec.sources,
      linkTarget: spec.targets,
      linkWeight: spec.weights,
      fileName: spec.fileName || null,
      document: spec.document || null,
    });
    const n = this.nodes.length;
    this.nodeKind = new Uint8Array(n);
    this.ctx = new Int32Array(n);
    this.layer = new Int32Array(n); // feature/error layer; -1 embeddings; nLayers logits (set below)
    this.influence = new Float64Array(n);
    this.activation = new Float64Array(n);
    this.index = new Map();
    let maxLayer = -1;
    let maxCtx = 0;
    for (let i = 0; i < n; i++) {
      const node = this.nodes[i];
      const kind = nodeKind(node.feature_type);
      this.nodeKind[i] = kind;
      this.ctx[i] = Number(node.ctx_idx) || 0;
      maxCtx = Math.max(maxCtx, this.ctx[i]);
      const layer = Number.parseInt(node.layer, 10);
      this.layer[i] = kind === KIND.EMBEDDING ? -1 : Number.isFinite(layer) ? layer : 0;
      if (kind === KIND.FEATURE || kind === KIND.ERROR) maxLayer = Math.max(maxLayer, this.layer[i]);
      this.influence[i] = typeof node.influence === "number" ? node.influence : NaN;
      this.activation[i] = typeof node.activation === "number" ? node.activation : NaN;
      this.index.set(node.node_id, i);
    }
    this.nLayers = maxLayer + 1;
    for (let i = 0; i < n; i++) if (this.nodeKind[i] === KIND.LOGIT) this.layer[i] = this.nLayers;
    const tokens = Array.isArray(this.metadata.prompt_tokens) ? this.metadata.prompt_tokens : [];
    this.tokens = tokens.map(String);
    this.nPos = Math.max(this.tokens.length, maxCtx + 1);
    let maxAbs = 0;
    for (let e = 0; e < this.linkWeight.length; e++) maxAbs = Math.max(maxAbs, Math.abs(this.linkWeight[e]));
    this.maxAbsWeight = maxAbs || 1;
    this.buildAdjacency();
  }

  get nLinks() { return this.linkWeight.length; }

  buildAdjacency() {
    const n = this.nodes.length;
    const m = this.nLinks;
    const outStart = new Int32Array(n + 1);
    const inStart = new Int32Array(n + 1);
    for (let e = 0; e < m; e++) { outStart[this.linkSource[e] + 1]++; inStart[this.linkTarget[e] + 1]++; }
    for (let i = 0; i < n; i++) { outStart[i + 1] += outStart[i]; inStart[i + 1] += inStart[i]; }
    const outLinks = new Int32Array(m);
    const inLinks = new Int32Array(m);
    const outFill = outStart.slice(0, n);
    const inFill = inStart.slice(0, n);
    for (let e = 0; e < m; e++) {
      outLinks[outFill[this.linkSource[e]]++] = e;
      inLinks[inFill[this.linkTarget[e]]++] = e;
    }
    Object.assign(this, { outStart, inStart, outLinks, inLinks });
  }

  /** Link ids into (incoming) or out of (outgoing) node i. */
  incoming(i) { return this.inLinks.subarray(this.inStart[i], this.inStart[i + 1]); }
  outgoing(i) { return this.outLinks.subarray(this.outStart[i], this.outStart[i + 1]); }

  /** What to call a node: its label (clerp), else something built from its kind and position. */
  label(i, nodeLabels = {}) {
    const node = this.nodes[i];
    if (nodeLabels[node.node_id]) return nodeLabels[node.node_id];
    if (node.clerp) return node.clerp;
    const token = this.tokens[this.ctx[i]] ?? `pos ${this.ctx[i]}`;
    switch (this.nodeKind[i]) {
      case KIND.EMBEDDING: return `Emb: "${token}"`;
      case KIND.ERROR: return `Err L${this.layer[i]} @ "${token}"`;
      case KIND.LOGIT: return `logit ${node.feature}`;
      default: {
        const key = featureKey(node);
        return key ? `L${key[0]} #${key[1]} @ "${token}"` : node.node_id;
      }
    }
  }

  /** Set the clerp of every node of feature (layer, feature) (after a label edit). */
  setFeatureLabel(layer, feature, text) {
    for (const node of this.nodes) {
      const key = featureKey(node);
      if (key && key[0] === layer && key[1] === feature) node.clerp = text || "";
    }
  }
}

/**
 * Load a graph from the server: its nodes and its links in pages (fetched concurrently). `keep`:
 * node ids shown whatever the thresholds (pins, supernode members, the clicked node).
 */
export async function loadServerGraph(slug, { nodeThreshold, edgeThreshold, keep = [] } = {}) {
  const params = new URLSearchParams();
  if (nodeThreshold !== undefined && nodeThreshold !== null) params.set("node_threshold", nodeThreshold);
  if (edgeThreshold !== undefined && edgeThreshold !== null) params.set("edge_threshold", edgeThreshold);
  // nodes the user's state names survive the server's pruning (sorted: one cached view per set)
  if (keep.length) params.set("keep", [...keep].sort().join(","));
  const query = params.toString();
  // Nodes and the first page of links at once (the server prunes once for both).
  const [head, first] = await Promise.all([api.nodes(slug, query), api.links(slug, query, 0, LINKS_PAGE)]);
  const total = first.total;
  const sources = new Int32Array(total);
  const targets = new Int32Array(total);
  const weights = new Float32Array(total);
  const store = (page) => {
    sources.set(page.source, page.offset);
    targets.set(page.target, page.offset);
    weights.set(page.weight, page.offset);
  };
  store(first);
  const rest = [];
  for (let offset = LINKS_PAGE; offset < total; offset += LINKS_PAGE) rest.push(offset);
  await Promise.all(rest.map(async (offset) => store(await api.links(slug, query, offset, LINKS_PAGE))));
  return new GraphData({
    origin: "server", slug, kind: head.kind, metadata: head.metadata, qParams: head.qParams,
    settings: { ...head.settings, query }, nodes: head.nodes, sources, targets, weights,
  });
}

/** A graph from a Neuronpedia JSON document (a file the user opened). */
export function graphFromDocument(document, fileName) {
  if (!document || !Array.isArray(document.nodes) || !Array.isArray(document.links)) {
    throw new Error(`${fileName}: not a graph JSON (expected "nodes" and "links" lists)`);
  }
  const index = new Map();
  document.nodes.forEach((node, i) => index.set(node.node_id, i));
  const m = document.links.length;
  const sources = new Int32Array(m);
  const targets = new Int32Array(m);
  const weights = new Float32Array(m);
  let kept = 0;
  for (const link of document.links) {
    const s = index.get(link.source);
    const t = index.get(link.target);
    if (s === undefined || t === undefined || typeof link.weight !== "number") continue;
    sources[kept] = s; targets[kept] = t; weights[kept] = link.weight; kept++;
  }
  return new GraphData({
    origin: "file", slug: document.metadata?.slug || fileName, kind: "neuronpedia",
    metadata: document.metadata, qParams: document.qParams, settings: {}, nodes: document.nodes,
    sources: sources.subarray(0, kept), targets: targets.subarray(0, kept), weights: weights.subarray(0, kept),
    fileName, document,
  });
}

/** Read a user-picked .json or .json.gz file. */
export async function readGraphFile(file) {
  let stream = file.stream();
  const head = new Uint8Array(await file.slice(0, 2).arrayBuffer());
  if (head[0] === 0x1f && head[1] === 0x8b) stream = stream.pipeThrough(new DecompressionStream("gzip"));
  const text = await new Response(stream).text();
  let document;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file.name}: not valid JSON (${error.message})`);
  }
  return graphFromDocument(document, file.name);
}

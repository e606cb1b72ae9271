// What the user has done to a graph: pins, supernodes, node labels (clerps), the clicked node,
// the pruning and edge thresholds, the error-node switch and the link limit. The same keys travel
// in the page's URL (so a link shares the view) and in the graph JSON's `qParams` (so "save"
// keeps it), named as the Anthropic frontend and Neuronpedia name them, so their links open here:
//   pinnedIds=a,b,c   supernodes=[["label","id",...],...]   clerps=[["id","label"],...]
//   clickedId=id      pruningThreshold=0.8                    linkType=both
// tracewire adds edgeThreshold, hideErrorNodes (as the explorer fork names it) and linkLimit.
// Keys written by other frontends (densityThreshold, sg_pos, ...) are kept as they came.

const LINK_TYPES = ["input", "output", "either", "both"];
/** URL keys that describe the view (the graph itself is `graph`, or Neuronpedia's `slug`). */
export const STATE_KEYS = [
  "pinnedIds", "supernodes", "clerps", "clickedId", "pruningThreshold", "edgeThreshold",
  "hideErrorNodes", "linkLimit", "linkType", "densityThreshold",
];

function parseJson(value) {
  if (typeof value !== "string") return value;
  try { return JSON.parse(value); } catch (_) { return undefined; }
}

function idList(value) {
  if (Array.isArray(value)) return value.filter((id) => typeof id === "string" && id);
  if (typeof value !== "string") return [];
  if (value.trim().startsWith("[")) return idList(parseJson(value));
  return value.split(",").map((id) => id.trim()).filter(Boolean);
}

function fraction(value) {
  const number = typeof value === "string" && value.trim() ? Number(value) : value;
  return typeof number === "number" && Number.isFinite(number) && number >= 0 && number <= 1 ? number : null;
}

function flag(value) {
  return value === true || value === "true" || value === "1";
}

/** The state keys present in a URL query, as strings (what `fromParams` reads). */
export function urlStateParams(search) {
  const params = new URLSearchParams(search);
  const out = {};
  for (const key of STATE_KEYS) if (params.has(key)) out[key] = params.get(key);
  return out;
}

export class ExplorerState {
  constructor() {
    this.pinned = [];          // node ids, in pin order
    this.supernodes = [];      // [{name, members: [node ids]}]
    this.nodeLabels = {};      // node id -> custom label (clerp)
    this.clickedId = "";
    this.threshold = null;     // pruning slider value (null: the graph's own)
    this.edgeThreshold = null; // server edge pruning (null: the server's default)
    this.hideErrors = false;
    this.linkLimit = null;     // draw only this many strongest links (null: all)
    this.linkType = "both";
    this.extra = {};           // qParams keys this UI does not use
    this.missing = [];         // ids the state named that the graph lacks (reported)
    this.listeners = new Set();
  }

  /** A state from qParams or URL values (strings or JSON values alike); ids are not checked. */
  static fromParams(q) {
    const state = new ExplorerState();
    const {
      pinnedIds, supernodes, clerps, nodeLabels, clickedId, pruningThreshold, edgeThreshold,
      hideErrorNodes, hideErrors, linkLimit, linkType, ...extra
    } = q || {};
    state.pinned = [...new Set(idList(pinnedIds))];
    const groups = parseJson(supernodes);
    if (Array.isArray(groups)) {
      for (const entry of groups) {
        if (!Array.isArray(entry) || entry.length < 2) continue;
        const members = [...new Set(idList(entry.slice(1)))];
        if (members.length) state.supernodes.push({ name: String(entry[0]), members });
      }
    }
    for (const group of state.supernodes) for (const id of group.members) if (!state.pinned.includes(id)) state.pinned.push(id);
    const legacy = parseJson(nodeLabels);
    if (legacy && typeof legacy === "object" && !Array.isArray(legacy)) {
      for (const [id, text] of Object.entries(legacy)) if (typeof text === "string" && text) state.nodeLabels[id] = text;
    }
    const pairs = parseJson(clerps);
    if (Array.isArray(pairs)) {
      for (const pair of pairs) {
        if (Array.isArray(pair) && typeof pair[0] === "string" && typeof pair[1] === "string" && pair[1]) state.nodeLabels[pair[0]] = pair[1];
      }
    }
    state.clickedId = typeof clickedId === "string" && clickedId !== "null" ? clickedId : "";
    state.threshold = fraction(pruningThreshold);
    state.edgeThreshold = fraction(edgeThreshold);
    state.hideErrors = flag(hideErrorNodes) || flag(hideErrors);
    const limit = typeof linkLimit === "string" && linkLimit.trim() ? Number(linkLimit) : linkLimit;
    state.linkLimit = Number.isInteger(limit) && limit >= 0 ? limit : null;
    state.linkType = LINK_TYPES.includes(linkType) ? linkType : "both";
    state.extra = extra;
    return state;
  }

  /** Every node id the state names (what the server must keep when it prunes). */
  referencedIds() {
    const ids = new Set(this.pinned);
    for (const group of this.supernodes) for (const id of group.members) ids.add(id);
    if (this.clickedId) ids.add(this.clickedId);
    return [...ids];
  }

  /** Drop the ids the graph lacks and remember them in `missing` (the page reports them). */
  restrictTo(validIds) {
    const missing = this.referencedIds().filter((id) => !validIds.has(id));
    const drop = new Set(missing);
    this.pinned = this.pinned.filter((id) => !drop.has(id));
    for (const group of this.supernodes) group.members = group.members.filter((id) => !drop.has(id));
    this.supernodes = this.supernodes.filter((group) => group.members.length > 0);
    if (drop.has(this.clickedId)) this.clickedId = "";
    this.missing = missing;
    return missing;
  }

  /** The `qParams` object that "save" writes (clerps as a JSON string, as the Anthropic frontend). */
  toQParams() {
    const q = {
      ...this.extra,
      pinnedIds: [...this.pinned],
      supernodes: this.supernodes.map((group) => [group.name, ...group.members]),
      clickedId: this.clickedId || "",
      linkType: this.linkType,
      sg_pos: typeof this.extra.sg_pos === "string" ? this.extra.sg_pos : "",
      clerps: JSON.stringify(this.labelPairs()),
      hideErrorNodes: this.hideErrors,
    };
    if (this.threshold !== null) q.pruningThreshold = this.threshold;
    if (this.edgeThreshold !== null) q.edgeThreshold = this.edgeThreshold;
    if (this.linkLimit !== null) q.linkLimit = this.linkLimit;
    return q;
  }

  /** The page URL's query: the graph and every non-default piece of the view. */
  toUrlParams(graph) {
    const params = new URLSearchParams();
    if (graph) params.set("graph", graph);
    if (this.pinned.length) params.set("pinnedIds", this.pinned.join(","));
    if (this.supernodes.length) params.set("supernodes", JSON.stringify(this.supernodes.map((g) => [g.name, ...g.members])));
    const labels = this.labelPairs();
    if (labels.length) params.set("clerps", JSON.stringify(labels));
    if (this.clickedId) params.set("clickedId", this.clickedId);
    if (this.threshold !== null) params.set("pruningThreshold", String(this.threshold));
    if (this.edgeThreshold !== null) params.set("edgeThreshold", String(this.edgeThreshold));
    if (this.hideErrors) params.set("hideErrorNodes", "true");
    if (this.linkLimit !== null) params.set("linkLimit", String(this.linkLimit));
    if (this.linkType !== "both") params.set("linkType", this.linkType);
    if (this.extra.densityThreshold !== undefined) params.set("densityThreshold", String(this.extra.densityThreshold));
    return params;
  }

  labelPairs() {
    return Object.entries(this.nodeLabels).filter(([, text]) => text);
  }

  onChange(listener) { this.listeners.add(listener); }
  changed(what) { for (const listener of this.listeners) listener(what); }

  isPinned(id) { return this.pinned.includes(id); }

  togglePin(id) {
    if (this.isPinned(id)) this.unpin([id]);
    else { this.pinned.push(id); this.changed("pins"); }
  }

  unpin(ids) {
    const drop = new Set(ids);
    this.pinned = this.pinned.filter((id) => !drop.has(id));
    for (const group of this.supernodes) group.members = group.members.filter((id) => !drop.has(id));
    this.supernodes = this.supernodes.filter((group) => group.members.length > 0);
    this.changed("pins");
  }

  supernodeOf(id) { return this.supernodes.find((group) => group.members.includes(id)) || null; }

  /**
   * Group nodes (pinning them) and the members of any supernode among `ids` (a supernode is named
   * by its name or by any member) into one supernode; a supernode among them keeps its name.
   */
  group(ids, name) {
    const members = [];
    let inherited = "";
    for (const id of ids) {
      const existing = this.supernodes.find((group) => group.name === id || group.members.includes(id));
      if (existing) {
        members.push(...existing.members);
        inherited ||= existing.name;
        this.supernodes = this.supernodes.filter((g) => g !== existing);
      } else members.push(id);
    }
    const unique = [...new Set(members)];
    if (unique.length < 2) return null;
    for (const id of unique) if (!this.isPinned(id)) this.pinned.push(id);
    const group = { name: name || inherited || this.freeGroupName(), members: unique };
    this.supernodes.push(group);
    this.changed("pins");
    return group;
  }

  freeGroupName() {
    const names = new Set(this.supernodes.map((g) => g.name));
    let k = this.supernodes.length + 1;
    while (names.has(`group ${k}`)) k++;
    return `group ${k}`;
  }

  ungroup(group) {
    this.supernodes = this.supernodes.filter((g) => g !== group);
    this.changed("pins");
  }

  rename(group, name) {
    const text = name.trim();
    if (!text || this.supernodes.some((g) => g !== group && g.name === text)) return false;
    group.name = text;
    this.changed("labels");
    return true;
  }
}

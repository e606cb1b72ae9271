// What the user has done to a graph: pins, supernodes, custom node labels, the clicked node,
// the pruning slider and error-node switch. It round-trips through the graph JSON's `qParams`
// (Neuronpedia / attribution-graph names: pinnedIds, supernodes = [[label, id, ...]], clickedId,
// linkType, sg_pos; tracewire adds nodeLabels, pruningThreshold, hideErrors and linkLimit). Keys written by
// other frontends are kept as they came.

export class ExplorerState {
  constructor() {
    this.pinned = [];          // node ids, in pin order
    this.supernodes = [];      // [{name, members: [node ids]}]
    this.nodeLabels = {};      // node id -> custom label
    this.clickedId = "";
    this.threshold = null;     // pruning slider value (null: the graph's own)
    this.hideErrors = false;
    this.linkLimit = null;     // draw only this many strongest links (null: all)
    this.extra = {};           // qParams keys this UI does not use
    this.listeners = new Set();
  }

  static fromQParams(q, validIds) {
    const state = new ExplorerState();
    const known = (id) => typeof id === "string" && (!validIds || validIds.has(id));
    const { pinnedIds, supernodes, nodeLabels, clickedId, pruningThreshold, hideErrors, linkLimit, ...extra } = q || {};
    const pins = typeof pinnedIds === "string" ? pinnedIds.split(",") : Array.isArray(pinnedIds) ? pinnedIds : [];
    state.pinned = [...new Set(pins.filter(known))];
    if (Array.isArray(supernodes)) {
      for (const entry of supernodes) {
        if (!Array.isArray(entry) || entry.length < 2) continue;
        const members = entry.slice(1).filter(known);
        if (members.length) state.supernodes.push({ name: String(entry[0]), members });
      }
    }
    for (const group of state.supernodes) for (const id of group.members) if (!state.pinned.includes(id)) state.pinned.push(id);
    if (nodeLabels && typeof nodeLabels === "object") {
      for (const [id, text] of Object.entries(nodeLabels)) if (typeof text === "string") state.nodeLabels[id] = text;
    }
    state.clickedId = known(clickedId) ? clickedId : "";
    state.threshold = typeof pruningThreshold === "number" ? pruningThreshold : null;
    state.hideErrors = hideErrors === true;
    state.linkLimit = Number.isInteger(linkLimit) && linkLimit >= 0 ? linkLimit : null;
    state.extra = extra;
    return state;
  }

  toQParams() {
    const pinned = new Set(this.pinned);
    const labels = Object.fromEntries(Object.entries(this.nodeLabels).filter(([id, text]) => pinned.has(id) && text));
    const q = {
      ...this.extra,
      pinnedIds: [...this.pinned],
      supernodes: this.supernodes.map((group) => [group.name, ...group.members]),
      clickedId: this.clickedId || "",
      linkType: ["input", "output", "either", "both"].includes(this.extra.linkType) ? this.extra.linkType : "both",
      sg_pos: typeof this.extra.sg_pos === "string" ? this.extra.sg_pos : "",
      nodeLabels: labels,
      hideErrors: this.hideErrors,
    };
    if (this.threshold !== null) q.pruningThreshold = this.threshold;
    if (this.linkLimit !== null) q.linkLimit = this.linkLimit;
    return q;
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

  /** Group pinned nodes (and the members of any supernode among `ids`) into one supernode. */
  group(ids, name) {
    const members = [];
    for (const id of ids) {
      const existing = this.supernodes.find((group) => group.name === id || group.members.includes(id));
      if (existing) { members.push(...existing.members); this.supernodes = this.supernodes.filter((g) => g !== existing); }
      else if (this.isPinned(id)) members.push(id);
    }
    const unique = [...new Set(members)];
    if (unique.length < 2) return null;
    const group = { name: name || `group ${this.supernodes.length + 1}`, members: unique };
    this.supernodes.push(group);
    this.changed("pins");
    return group;
  }

  ungroup(group) {
    this.supernodes = this.supernodes.filter((g) => g !== group);
    this.changed("pins");
  }
}

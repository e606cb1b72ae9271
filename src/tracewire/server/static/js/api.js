// The JSON API of `tracewire serve` (documented at /api/docs). Every error becomes an Error whose
// message is the server's `detail`, so the status line can say what went wrong.

/**
 * One page of links, {offset, total, source, target, weight}: the `format=binary` page (int32,
 * int32, float32 columns, read into typed arrays with no parsing), or a JSON page where an answerer
 * only has those (the standalone HTML file's offline fetch).
 */
async function linksPage(url) {
  const response = await fetch(url);
  if (!response.ok) throw await failure(response);
  if ((response.headers.get("Content-Type") || "").includes("json")) return response.json();
  const buffer = await response.arrayBuffer();
  const n = buffer.byteLength / 12;
  return {
    offset: Number(response.headers.get("X-Links-Offset")),
    total: Number(response.headers.get("X-Links-Total")),
    source: new Int32Array(buffer, 0, n),
    target: new Int32Array(buffer, 4 * n, n),
    weight: new Float32Array(buffer, 8 * n, n),
  };
}

/** The Error for a failed response: the server's `detail` when it sent one, else the status. */
async function failure(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const payload = await response.json();
    if (typeof payload.detail === "string") detail = payload.detail;
    else if (Array.isArray(payload.detail)) {
      detail = payload.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    }
  } catch (_) { /* not JSON: keep the status text */ }
  const error = new Error(detail);
  error.status = response.status;
  return error;
}

async function request(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  info: () => request("GET", "/api/info"),
  graphs: () => request("GET", "/api/graphs"),
  nodes: (slug, query) => request("GET", `/api/graphs/${enc(slug)}/nodes?${query}`),
  links: (slug, query, offset, limit) =>
    linksPage(`/api/graphs/${enc(slug)}/links?${query}&offset=${offset}&limit=${limit}&format=binary`),
  documentUrl: (slug, query) => `/api/graphs/${enc(slug)}?${query}`,
  subgraphScores: (slug, pinnedIds) =>
    request("POST", `/api/graphs/${enc(slug)}/subgraph-scores`, { pinnedIds }),
  saveQParams: (slug, qParams) => request("POST", `/api/graphs/${enc(slug)}/qparams`, { qParams }),
  feature: (layer, feature) => request("GET", `/api/features/${layer}/${feature}`),
  setLabel: (layer, feature, label) =>
    request("PUT", `/api/features/${layer}/${feature}/label`, { label }),
  steer: (body) => request("POST", "/api/steer", body),
  edgeHeads: (slug, ids, top) =>
    request("GET", `/api/graphs/${enc(slug)}/heads?${new URLSearchParams({ ...ids, top })}`),
  qk: (slug, body) => request("POST", `/api/graphs/${enc(slug)}/qk`, body),
  startAttribution: (body) => request("POST", "/api/attribution/jobs", body),
  cancelAttribution: (id) => request("DELETE", `/api/attribution/jobs/${enc(id)}`),
  attributionEventsUrl: (id) => `/api/attribution/jobs/${enc(id)}/events`,
  search: (query) => request("GET", `/api/search?q=${enc(query)}`),
};

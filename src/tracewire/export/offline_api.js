// The explorer's JSON API, answered from data embedded in this page (a standalone export).
//
// A standalone file is the explorer of `tracewire serve`, unchanged, plus this script: it replaces
// `window.fetch` before the explorer starts, and answers each API request with the response the
// real server gave when the file was exported (recorded in the gzip+base64 block
// #tracewire-offline-data). Nothing here ever calls the network: a request that was not recorded
// is answered 404 with a message that says what needs a running server.
(() => {
  const DATA_ID = "tracewire-offline-data";
  const ORIGIN = "http://tracewire.offline";
  const realFetch = window.fetch.bind(window);
  let table = null;

  async function load() {
    const text = document.getElementById(DATA_ID).textContent.replace(/\s+/g, "");
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function answer(status, body) {
    return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  }

  function linksPage(all, params) {
    const offset = Math.max(0, Number(params.get("offset")) || 0);
    const limit = params.has("limit") ? Math.max(0, Number(params.get("limit")) || 0) : all.source.length;
    const end = offset + limit;
    return {
      offset, total: all.source.length,
      source: all.source.slice(offset, end), target: all.target.slice(offset, end), weight: all.weight.slice(offset, end),
    };
  }

  window.fetch = async (input, init = {}) => {
    const raw = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(raw, `${ORIGIN}/`);
    if (url.protocol === "blob:" || url.protocol === "data:") return realFetch(input, init);
    const method = String(init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
    if (url.origin !== ORIGIN) return answer(404, { detail: `${url.href}: a standalone file makes no network requests` });
    table = table || load();
    const data = await table;
    const path = url.pathname;
    if (method === "GET") {
      const links = path.match(/^\/api\/graphs\/([^/]+)\/links$/);
      if (links && data.links[decodeURIComponent(links[1])]) return answer(200, linksPage(data.links[decodeURIComponent(links[1])], url.searchParams));
      if (Object.hasOwn(data.responses, path)) return answer(200, data.responses[path]);
    }
    const why = data.unavailable.find(([pattern]) => new RegExp(pattern).test(`${method} ${path}`));
    return answer(why ? why[1] : 404, { detail: why ? why[2] : `${method} ${path}: not recorded in this standalone file` });
  };
})();

// The xmodal-search page: plain JS, no build step, no third-party code, nothing from the internet.
// State lives in the URL (?collection=&q=&k=&k_retrieve=&rerank=&view=&tab=); the API key lives in
// sessionStorage and only ever travels as the X-API-Key header.
"use strict";

(() => {
  const KEY_STORAGE = "xmr-api-key";
  const DEFAULTS = { k: 10, kRetrieve: 50 };
  const POLL_RUNNING_MS = 700;
  const POLL_IDLE_MS = 4000;
  const $ = (id) => document.getElementById(id);

  const state = {
    collection: "",
    q: "",
    k: DEFAULTS.k,
    kRetrieve: DEFAULTS.kRetrieve,
    rerank: true,
    view: "results",
    tab: "search",
  };
  let imageQuery = null; // {base64, dataUrl, name}: an image query (not kept in the URL)
  let last = null; // {res, k, query, rttMs}: the last search shown
  let pending = null; // what to run again once a key has been given
  let searchSeq = 0;
  const thumbs = new Map(); // "collection/id" -> Promise<object URL>
  let jobsTimer = null;
  const expanded = new Set(); // job ids whose failed items are shown

  // ---------------------------------------------------------------------------------------------
  // small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("data-")) node.setAttribute(name, String(value));
      else if (name in node && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const clampInt = (v, lo, hi, dflt) => {
    const n = Number.parseInt(v, 10);
    return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
  };

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function detailText(body, fallback) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((x) => `${(x.loc || []).slice(1).join(".")}: ${x.msg}`).join("; ");
    return fallback;
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = {};
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (e) {
      throw new ApiError(0, `the service does not answer (${e.message})`);
    }
    if (!response.ok) {
      let parsed = null;
      try {
        parsed = await response.json();
      } catch (_) {
        /* not JSON */
      }
      throw new ApiError(response.status, detailText(parsed, response.statusText || "request failed"));
    }
    return response;
  }

  const apiJson = async (path, opts) => (await api(path, opts)).json();

  // ---------------------------------------------------------------------------------------------
  // errors and the API key

  function showError(err, retry) {
    const box = $("error");
    box.replaceChildren();
    if (err instanceof ApiError && err.status === 401) {
      box.append(
        el("strong", { text: "Not authorised: " }),
        `${err.message}. `,
        el("button", { type: "button", class: "link", id: "error-key", text: "Enter the API key", onclick: () => askKey(retry) }),
      );
      box.dataset.status = "401";
      box.hidden = false;
      askKey(retry);
      return;
    }
    const status = err instanceof ApiError && err.status ? `${err.status}: ` : "";
    box.append(el("strong", { text: "Error " }), `${status}${err.message || err}`);
    box.dataset.status = err instanceof ApiError ? String(err.status) : "";
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").replaceChildren();
  }

  function askKey(retry) {
    pending = retry || pending;
    const dialog = $("key-dialog");
    $("key-input").value = "";
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  }

  function onKeyDialogClose() {
    const choice = $("key-dialog").returnValue;
    if (choice === "save") {
      const key = $("key-input").value.trim();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
    } else if (choice === "forget") {
      sessionStorage.removeItem(KEY_STORAGE);
    } else {
      pending = null;
      return;
    }
    $("key-input").value = "";
    resetThumbs();
    const retry = pending;
    pending = null;
    clearError();
    (retry || start)();
  }

  // ---------------------------------------------------------------------------------------------
  // URL state

  function readUrl() {
    const p = new URLSearchParams(location.search);
    state.collection = p.get("collection") || "";
    state.q = p.get("q") || "";
    state.k = clampInt(p.get("k"), 1, 1000, DEFAULTS.k);
    state.kRetrieve = clampInt(p.get("k_retrieve"), 1, 1000, DEFAULTS.kRetrieve);
    state.rerank = !["0", "false", "off", "no"].includes((p.get("rerank") || "").toLowerCase());
    state.view = p.get("view") === "compare" ? "compare" : "results";
    state.tab = p.get("tab") === "jobs" ? "jobs" : "search";
  }

  function writeUrl(push) {
    const p = new URLSearchParams();
    if (state.collection) p.set("collection", state.collection);
    if (state.q) p.set("q", state.q);
    if (state.k !== DEFAULTS.k) p.set("k", String(state.k));
    if (state.kRetrieve !== DEFAULTS.kRetrieve) p.set("k_retrieve", String(state.kRetrieve));
    if (!state.rerank) p.set("rerank", "0");
    if (state.view !== "results") p.set("view", state.view);
    if (state.tab !== "search") p.set("tab", state.tab);
    const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
    if (url === `${location.pathname}${location.search}`) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  function stateToForm() {
    $("q").value = state.q;
    $("k").value = state.k;
    $("k-retrieve").value = state.kRetrieve;
    $("rerank").checked = state.rerank;
  }

  function formToState() {
    state.k = clampInt($("k").value, 1, 1000, DEFAULTS.k);
    state.kRetrieve = clampInt($("k-retrieve").value, 1, 1000, DEFAULTS.kRetrieve);
    state.rerank = $("rerank").checked;
    $("k").value = state.k;
    $("k-retrieve").value = state.kRetrieve;
  }

  // ---------------------------------------------------------------------------------------------
  // collections

  async function loadCollections() {
    const select = $("collection");
    const { collections } = await apiJson("/collections");
    select.replaceChildren(
      ...collections.map((c) =>
        el("option", { value: c.name, text: `${c.name} (${c.images} images, ${c.captions} captions)` }),
      ),
    );
    if (state.collection && !collections.some((c) => c.name === state.collection)) {
      select.prepend(el("option", { value: state.collection, text: `${state.collection} (not found)` }));
    }
    if (!state.collection && collections.length) state.collection = collections[0].name;
    select.value = state.collection;
    if (!collections.length) {
      $("summary").textContent =
        "No collections yet: xmr collections create NAME, then xmr index MANIFEST --collection NAME.";
    }
  }

  // ---------------------------------------------------------------------------------------------
  // thumbnails (fetched with the key header, shown through object URLs)

  function resetThumbs() {
    for (const p of thumbs.values()) p.then((u) => u && URL.revokeObjectURL(u)).catch(() => {});
    thumbs.clear();
  }

  function thumbUrl(collection, id) {
    const key = `${collection}/${id}`;
    if (!thumbs.has(key)) {
      const p = api(`/thumbnails/${encodeURIComponent(collection)}/${encodeURIComponent(id)}`)
        .then((r) => r.blob())
        .then((b) => URL.createObjectURL(b));
      p.catch(() => thumbs.delete(key));
      thumbs.set(key, p);
    }
    return thumbs.get(key);
  }

  function thumbImg(collection, hit, cls) {
    const img = el("img", { class: cls || "thumb", alt: hit.caption || hit.id, "data-id": hit.id });
    img.addEventListener("load", () => {
      if (img.naturalWidth && img.naturalWidth < 120) img.classList.add("pixelated");
    });
    thumbUrl(collection, hit.id)
      .then((url) => {
        img.src = url;
      })
      .catch((e) => {
        img.classList.add("broken");
        img.title = `thumbnail: ${e.message}`;
      });
    return img;
  }

  // ---------------------------------------------------------------------------------------------
  // search

  function movement(hit, rank, reranked) {
    if (!reranked) return el("span", { class: "move same", title: "bi-encoder order", text: "·" });
    const d = hit.bi_rank - rank;
    const title = `bi-encoder rank ${hit.bi_rank} → reranked rank ${rank}`;
    if (d > 0) return el("span", { class: "move up", title, "data-move": d, text: `▲${d}` });
    if (d < 0) return el("span", { class: "move down", title, "data-move": d, text: `▼${-d}` });
    return el("span", { class: "move same", title, "data-move": 0, text: "=" });
  }

  function scores(hit) {
    return el(
      "span",
      { class: "scores" },
      el("span", { class: "ce", title: "cross-encoder score", text: `ce ${fmt(hit.ce_score)}` }),
      el("span", { class: "bi", title: "bi-encoder score (inner product)", text: `bi ${fmt(hit.bi_score)}` }),
    );
  }

  async function runSearch(query, { push = true } = {}) {
    formToState();
    if (!state.collection) {
      showError(new Error("pick a collection first"));
      return;
    }
    const seq = ++searchSeq;
    clearError();
    $("results").replaceChildren();
    $("compare").replaceChildren();
    $("views").hidden = true;
    $("timings").hidden = true;
    last = null;
    $("summary").textContent = "Searching…";
    state.q = query.text || "";
    writeUrl(push);
    const k = state.k;
    const body = {
      collection: state.collection,
      // reranked: ask for every candidate, so the before/after view has the whole bi-encoder list
      k: state.rerank ? Math.max(k, state.kRetrieve) : k,
      k_retrieve: state.kRetrieve,
      rerank: state.rerank,
    };
    if (query.text !== undefined) body.text = query.text;
    else body.image_base64 = query.base64;
    const t0 = performance.now();
    let res;
    try {
      res = await apiJson("/search", { method: "POST", body });
    } catch (e) {
      if (seq !== searchSeq) return;
      $("summary").textContent = "";
      showError(e, () => runSearch(query, { push: false }));
      return;
    }
    if (seq !== searchSeq) return; // a newer search started meanwhile
    last = { res, k, query, rttMs: performance.now() - t0 };
    render();
  }

  function render() {
    if (!last) return;
    const { res, k, query } = last;
    const shown = res.hits.slice(0, k);
    const what = res.query_kind === "text" ? `images for “${query.text}”` : `captions for the image ${query.name || ""}`;
    $("summary").replaceChildren(
      `${shown.length} ${what} in ${res.collection}`,
      res.reranked
        ? ` — top ${res.hits.length} of the bi-encoder reranked by the cross-encoder`
        : " — bi-encoder order (reranking off)",
    );
    renderTimings(res.timings_ms, last.rttMs);
    $("views").hidden = false;
    const results = $("results");
    results.dataset.kind = res.query_kind;
    results.dataset.reranked = String(res.reranked);
    if (!shown.length) results.replaceChildren(el("p", { class: "muted", text: "No hits." }));
    else if (res.query_kind === "text") results.replaceChildren(grid(res, shown));
    else results.replaceChildren(captionList(res, shown));
    renderCompare();
    setView(state.view);
  }

  function grid(res, hits) {
    return el(
      "div",
      { class: "grid", id: "grid" },
      ...hits.map((hit, i) =>
        el(
          "figure",
          { class: "hit", "data-id": hit.id, "data-rank": i + 1, "data-bi-rank": hit.bi_rank },
          el("div", { class: "thumb-box" }, thumbImg(res.collection, hit)),
          el(
            "figcaption",
            {},
            el("span", { class: "rank", text: `#${i + 1}` }),
            movement(hit, i + 1, res.reranked),
            scores(hit),
          ),
        ),
      ),
    );
  }

  function captionList(res, hits) {
    return el(
      "ol",
      { class: "captions", id: "captions" },
      ...hits.map((hit, i) =>
        el(
          "li",
          { class: "hit", "data-id": hit.id, "data-rank": i + 1, "data-bi-rank": hit.bi_rank },
          el("span", { class: "rank", text: `#${i + 1}` }),
          movement(hit, i + 1, res.reranked),
          el("span", { class: "caption-text", text: hit.caption || "(no caption)" }),
          scores(hit),
        ),
      ),
    );
  }

  function renderTimings(t, rtt) {
    const box = $("timings");
    const stages = [
      ["encode", "encode query"],
      ["knn", "k-NN"],
      ["rerank", "rerank"],
    ];
    const total = Math.max(t.total || 0, 1e-6);
    const bar = el(
      "div",
      { class: "tbar" },
      ...stages.map(([key, label]) =>
        el("span", {
          class: `seg seg-${key}`,
          style: { width: `${(100 * (t[key] || 0)) / total}%` },
          title: `${label}: ${fmt(t[key], 1)} ms`,
        }),
      ),
    );
    box.replaceChildren(
      bar,
      el(
        "div",
        { class: "tlegend" },
        ...stages.map(([key, label]) =>
          el("span", { class: `t-${key}`, "data-stage": key }, el("i", { class: `dot seg-${key}` }), `${label} ${fmt(t[key], 1)} ms`),
        ),
        el("span", { "data-stage": "total" }, `total ${fmt(t.total, 1)} ms`),
        el("span", { class: "muted", "data-stage": "round-trip" }, `round trip ${fmt(rtt, 0)} ms`),
      ),
    );
    box.hidden = false;
  }

  function renderCompare() {
    const box = $("compare");
    const { res, k } = last;
    if (!res.reranked) {
      box.replaceChildren(
        el("p", { class: "muted", text: "Reranking is off: this is the bi-encoder's order. Tick “rerank” to compare." }),
      );
      return;
    }
    const after = res.hits.slice(0, k);
    const before = [...res.hits].sort((a, b) => a.bi_rank - b.bi_rank).slice(0, k);
    const finalRank = new Map(res.hits.map((h, i) => [h.id, i + 1]));
    const inAfter = new Set(after.map((h) => h.id));
    const inBefore = new Set(before.map((h) => h.id));
    const row = (hit, side) => {
      const rank = side === "before" ? hit.bi_rank : finalRank.get(hit.id);
      const gone = side === "before" && !inAfter.has(hit.id);
      const fresh = side === "after" && !inBefore.has(hit.id);
      const media =
        res.query_kind === "text"
          ? thumbImg(res.collection, hit, "mini")
          : el("span", { class: "caption-text", text: hit.caption || "" });
      const note =
        side === "before"
          ? el("span", { class: gone ? "note out" : "note", text: `→ #${finalRank.get(hit.id)}` })
          : movement(hit, rank, true);
      return el(
        "li",
        { class: `crow${gone ? " out" : ""}${fresh ? " fresh" : ""}`, "data-id": hit.id },
        el("span", { class: "rank", text: `#${rank}` }),
        media,
        note,
        el("span", {
          class: "score",
          text: side === "before" ? `bi ${fmt(hit.bi_score)}` : `ce ${fmt(hit.ce_score)}`,
        }),
      );
    };
    box.replaceChildren(
      el(
        "div",
        { class: "col", id: "compare-before" },
        el("h3", { text: `Before: bi-encoder top ${before.length}` }),
        el("ol", {}, ...before.map((h) => row(h, "before"))),
      ),
      el(
        "div",
        { class: "col", id: "compare-after" },
        el("h3", { text: `After: cross-encoder top ${after.length}` }),
        el("ol", {}, ...after.map((h) => row(h, "after"))),
      ),
    );
  }

  function setView(view) {
    state.view = view;
    for (const b of document.querySelectorAll(".view")) b.setAttribute("aria-pressed", String(b.dataset.view === view));
    $("results").hidden = view !== "results";
    $("compare").hidden = view !== "compare";
  }

  function readImageFile(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      showError(new Error(`${file.name}: not an image file`));
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      const dataUrl = String(reader.result);
      imageQuery = { dataUrl, base64: dataUrl.slice(dataUrl.indexOf(",") + 1), name: file.name };
      const preview = $("query-image");
      preview.src = dataUrl;
      preview.hidden = false;
      $("q").value = "";
      runSearch(imageQuery);
    };
    reader.onerror = () => showError(new Error(`${file.name}: cannot read the file`));
    reader.readAsDataURL(file);
  }

  // ---------------------------------------------------------------------------------------------
  // jobs

  function setTab(tab, push) {
    state.tab = tab;
    for (const b of document.querySelectorAll(".tab")) b.setAttribute("aria-pressed", String(b.dataset.tab === tab));
    $("search-view").hidden = tab !== "search";
    $("jobs-view").hidden = tab !== "jobs";
    writeUrl(push);
    clearTimeout(jobsTimer);
    if (tab === "jobs") refreshJobs();
  }

  const FINAL = new Set(["done", "done_with_errors", "failed", "cancelled"]);

  function progressOf(job) {
    const processed = job.total - (job.counts.pending || 0);
    const pct = job.total ? Math.floor((100 * processed) / job.total) : 100;
    return { processed, pct };
  }

  function jobRow(job) {
    const row = el(
      "tr",
      { class: "job", "data-job-id": job.id },
      el("td", { class: "id", text: `#${job.id}` }),
      el("td", { class: "col-name" }),
      el("td", { class: "source" }),
      el("td", {}, el("span", { class: "badge status" })),
      el(
        "td",
        { class: "progress-cell" },
        el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, el("div", { class: "fill" })),
        el("span", { class: "pct" }),
        el("span", { class: "processed muted" }),
      ),
      el("td", { class: "counts" }),
      el("td", { class: "when muted" }),
      el(
        "td",
        { class: "actions" },
        el("button", { type: "button", class: "retry", text: "Retry", onclick: () => jobAction(job.id, "retry") }),
        el("button", { type: "button", class: "cancel secondary", text: "Cancel", onclick: () => jobAction(job.id, "cancel") }),
        el("button", { type: "button", class: "failed-toggle link", onclick: () => toggleFailed(job.id) }),
      ),
    );
    const details = el(
      "tr",
      { class: "failed-items", "data-job-id": job.id, hidden: true },
      el("td", { colspan: 8 }, el("div", { class: "failed-box" })),
    );
    return [row, details];
  }

  function updateJobRow(row, job) {
    const { processed, pct } = progressOf(job);
    row.dataset.status = job.status;
    row.querySelector(".col-name").textContent = job.collection;
    const src = row.querySelector(".source");
    src.textContent = job.source.split("/").pop();
    src.title = job.source;
    const badge = row.querySelector(".status");
    badge.textContent = job.status.replaceAll("_", " ");
    badge.className = `badge status s-${job.status}`;
    badge.title = job.error || "";
    const bar = row.querySelector(".progress");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.dataset.progress = String(pct);
    bar.classList.toggle("live", !FINAL.has(job.status));
    row.querySelector(".fill").style.width = `${pct}%`;
    row.querySelector(".pct").textContent = `${pct}%`;
    row.querySelector(".processed").textContent = `${processed}/${job.total}`;
    const c = job.counts;
    row.querySelector(".counts").replaceChildren(
      ...["done", "failed", "duplicate", "cancelled", "pending"].map((s) =>
        el("span", { class: `count c-${s}`, "data-count": s, title: s }, `${s} ${c[s] || 0}`),
      ),
    );
    row.querySelector(".when").textContent = (job.finished_at || job.started_at || job.created_at || "").replace("T", " ").replace("Z", "");
    const retryable = (c.failed || 0) + (c.cancelled || 0);
    row.querySelector(".retry").disabled = !FINAL.has(job.status) || retryable === 0;
    row.querySelector(".cancel").disabled = FINAL.has(job.status);
    const toggle = row.querySelector(".failed-toggle");
    toggle.textContent = expanded.has(job.id) ? "hide failed" : `failed items (${c.failed || 0})`;
    toggle.disabled = !c.failed;
  }

  async function refreshJobs() {
    clearTimeout(jobsTimer);
    if (state.tab !== "jobs") return;
    const all = $("jobs-all").checked || !state.collection;
    let jobs;
    try {
      ({ jobs } = await apiJson(all ? "/jobs?limit=50" : `/jobs?limit=50&collection=${encodeURIComponent(state.collection)}`));
    } catch (e) {
      showError(e, refreshJobs);
      return;
    }
    const body = $("jobs").tBodies[0];
    const seen = new Set();
    let before = null;
    for (const job of jobs) {
      seen.add(String(job.id));
      let row = body.querySelector(`tr.job[data-job-id="${job.id}"]`);
      if (!row) {
        const [r, d] = jobRow(job);
        body.insertBefore(r, before ? before.nextSibling : body.firstChild);
        r.after(d);
        row = r;
      }
      const prevFailed = row.dataset.failed;
      updateJobRow(row, job);
      row.dataset.failed = String(job.counts.failed || 0);
      if (expanded.has(job.id) && prevFailed !== row.dataset.failed) loadFailed(job.id);
      before = row.nextSibling; // its details row
    }
    for (const r of [...body.rows]) if (!seen.has(r.dataset.jobId)) r.remove();
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    const live = jobs.some((j) => !FINAL.has(j.status));
    jobsTimer = setTimeout(refreshJobs, live ? POLL_RUNNING_MS : POLL_IDLE_MS);
  }

  async function jobAction(id, action) {
    clearError();
    try {
      await apiJson(`/jobs/${id}/${action}`, { method: "POST" });
    } catch (e) {
      showError(e, () => jobAction(id, action));
      return;
    }
    refreshJobs();
  }

  function toggleFailed(id) {
    const details = $("jobs").querySelector(`tr.failed-items[data-job-id="${id}"]`);
    if (expanded.has(id)) {
      expanded.delete(id);
      details.hidden = true;
    } else {
      expanded.add(id);
      details.hidden = false;
      loadFailed(id);
    }
    const row = $("jobs").querySelector(`tr.job[data-job-id="${id}"]`);
    if (row) row.querySelector(".failed-toggle").textContent = expanded.has(id) ? "hide failed" : `failed items (${row.dataset.failed || 0})`;
  }

  async function loadFailed(id) {
    const box = $("jobs").querySelector(`tr.failed-items[data-job-id="${id}"] .failed-box`);
    if (!box) return;
    let items;
    try {
      ({ items } = await apiJson(`/jobs/${id}/items?status=failed&limit=200`));
    } catch (e) {
      box.replaceChildren(el("span", { class: "muted", text: e.message }));
      return;
    }
    box.replaceChildren(
      items.length
        ? el(
            "table",
            { class: "failed" },
            el("thead", {}, el("tr", {}, el("th", { text: "item" }), el("th", { text: "kind" }), el("th", { text: "reason" }))),
            el(
              "tbody",
              {},
              ...items.map((it) =>
                el(
                  "tr",
                  { class: "failed-item" },
                  el("td", { class: "key", text: it.source || it.key, title: it.key }),
                  el("td", { text: it.kind }),
                  el("td", { class: "reason", text: it.error || "" }),
                ),
              ),
            ),
          )
        : el("span", { class: "muted", text: "No failed items." }),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // start-up and events

  async function start() {
    clearError();
    try {
      await loadCollections();
    } catch (e) {
      showError(e, start);
      return;
    }
    setTab(state.tab, false);
    if (state.tab === "search" && state.q && state.collection) runSearch({ text: state.q }, { push: false });
  }

  function bind() {
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("q").value.trim();
      if (text) {
        imageQuery = null;
        $("query-image").hidden = true;
        runSearch({ text });
      } else if (imageQuery) runSearch(imageQuery);
      else showError(new Error("type a text query or drop an image"));
    });
    $("rerank").addEventListener("change", () => {
      if (last) runSearch(last.query);
    });
    $("collection").addEventListener("change", () => {
      state.collection = $("collection").value;
      writeUrl(true);
      if (state.tab === "jobs") refreshJobs();
      else if (last) runSearch(last.query);
    });
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => setTab(b.dataset.tab, true));
    for (const b of document.querySelectorAll(".view"))
      b.addEventListener("click", () => {
        setView(b.dataset.view);
        writeUrl(false);
      });
    $("jobs-all").addEventListener("change", refreshJobs);
    $("key-button").addEventListener("click", () => askKey(null));
    $("key-dialog").addEventListener("close", onKeyDialogClose);
    $("file").addEventListener("change", (ev) => readImageFile(ev.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      drop.classList.remove("over");
      readImageFile(ev.dataTransfer.files[0]);
    });
    drop.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        $("file").click();
      }
    });
    window.addEventListener("popstate", () => {
      readUrl();
      stateToForm();
      $("collection").value = state.collection;
      setTab(state.tab, false);
      if (state.tab === "search" && state.q) runSearch({ text: state.q }, { push: false });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    readUrl();
    stateToForm();
    bind();
    start();
  });
})();

// The hashkit search page: no build step, no dependencies. Talks to the same service's API.
"use strict";

const $ = (id) => document.getElementById(id);
const THUMB = 160;
let token = sessionStorage.getItem("hashkit-token") || "";
let lastQuery = null; // re-run on a change of k: {kind: "file", file} or {kind: "item", id}
let searches = 0; // results shown so far (#grid's data-searches, for tests and scripts)

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("this service needs a token");
  }
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// Thumbnails are plain <img> URLs, or blob: URLs fetched with the token when one is needed
// (an <img> cannot send an Authorization header).
function setThumbnail(img, id) {
  const url = `/api/items/${id}/image?size=${THUMB}`;
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 64), { once: true });
  if (!token) {
    img.src = url;
    return;
  }
  fetch(url, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = "no image"; });
}

function showQuery(name, setImage) {
  const img = $("query-image");
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 64), { once: true });
  setImage(img);
  img.hidden = false;
  $("drop").classList.add("has-image");
  $("query-name").textContent = name;
}

function render(body, roundTripMs) {
  const grid = $("grid");
  grid.replaceChildren();
  const hits = body.results[0].hits;
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.tabIndex = 0;
    li.dataset.id = hit.id;
    li.dataset.rank = hit.rank;
    li.dataset.distance = hit.distance;
    li.title = hit.path || `item ${hit.id}`;
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = hit.label || `item ${hit.id}`;
    img.loading = "lazy";
    setThumbnail(img, hit.id);
    const meta = document.createElement("div");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `#${hit.rank}`;
    const distance = document.createElement("span");
    distance.className = "distance" + (hit.distance === 0 ? " zero" : "");
    distance.textContent = `d = ${hit.distance}`;
    meta.append(rank, distance);
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = hit.label || "–";
    li.append(img, meta, label);
    const open = () => searchItem(hit.id, hit.label);
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
    grid.append(li);
  }
  grid.dataset.searches = ++searches;
  $("hint").hidden = hits.length > 0;
  if (!hits.length) $("hint").textContent = "No results.";
  const more = body.results[0].truncated ? " (cut at the limit)" : "";
  $("timing").textContent =
    `${hits.length} results${more} · ${body.took_ms.toFixed(1)} ms in the service · ` +
    `${roundTripMs.toFixed(0)} ms round trip`;
  $("timing").dataset.tookMs = body.took_ms;
}

async function run(request) {
  showError("");
  $("timing").textContent = "searching…";
  const start = performance.now();
  try {
    const body = await request();
    render(body, performance.now() - start);
  } catch (err) {
    $("timing").textContent = "";
    showError(err.message);
  }
}

function searchFile(file) {
  lastQuery = { kind: "file", file };
  showQuery(file.name, (img) => { img.src = URL.createObjectURL(file); });
  const form = new FormData();
  form.append("images", file, file.name);
  form.append("k", $("k").value);
  return run(() => api("/api/search", { method: "POST", body: form }));
}

function searchItem(id, label) {
  lastQuery = { kind: "item", id, label };
  showQuery(`item ${id}${label ? ` · ${label}` : ""}`, (img) => setThumbnail(img, id));
  return run(() => api(`/api/items/${id}/similar?k=${$("k").value}`));
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    const index = info.index;
    $("index-info").textContent =
      `${index.count.toLocaleString()} images · ${index.bits}-bit codes · ${index.type} index`;
    $("token-form").hidden = true;
  } catch (err) {
    $("index-info").textContent = "";
    showError(err.message);
  }
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) searchFile(e.target.files[0]);
    e.target.value = ""; // so that picking the same file again searches again
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) searchFile(e.dataTransfer.files[0]);
  });
  $("k").addEventListener("change", () => {
    if (lastQuery?.kind === "file") searchFile(lastQuery.file);
    else if (lastQuery?.kind === "item") searchItem(lastQuery.id, lastQuery.label);
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("hashkit-token", token);
    showError("");
    loadInfo();
  });
  loadInfo();
}

setUp();

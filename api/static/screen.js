// County command-centre screen (大屏): map of grids coloured by their open cases, live markers, feed, counters,
// and a case panel with its timeline. All updates come over the WebSocket; nothing reloads the page.
import {
  EventStream, FINAL_STATES, api, applyLanguage, el, ensureSignedIn, errorText, fmtTime,
  installLanguageToggle, label, loadOpenCases, pct, photoUrl, signOut, statusText, tr,
} from "/static/common.js";

const COLORS = { green: "#2ecc71", yellow: "#f5c518", red: "#ff4d4f", none: "#3d6a99" };
const RANK = { green: 1, yellow: 2, red: 3 };
const FEED_MAX = 200;

const state = {
  me: null,
  config: null,
  cases: new Map(), // id → summary of an open case
  finished: new Map(), // id → version at which it left the screen (closed, rejected, merged)
  markers: new Map(),
  gridLayers: new Map(),
  panelId: null,
  seen: [], // every seq handed to the page, in order: the browser test checks it has no duplicates
};
window.gd = state;

const me = await ensureSignedIn(tr("县级指挥中心 · 登录", "Command centre · sign in"));
state.me = me;
state.config = await api("/api/v1/pages/config");
applyLanguage();
const countyName = state.config.units.find((u) => u.code === me.county)?.name || "";
document.getElementById("county-name").textContent = countyName;
document.getElementById("who").textContent = me.display_name;
document.getElementById("signout").addEventListener("click", signOut);
installLanguageToggle(document.getElementById("lang"), () => { redrawFeedLabels(); if (state.panelId) openPanel(state.panelId); });
setInterval(() => { document.getElementById("now").textContent = fmtTime(new Date().toISOString(), true); }, 1000);

// ------------------------------------------------------------------ map

const map = L.map("map", { zoomControl: true, attributionControl: Boolean(state.config.tiles.url), preferCanvas: true });
if (state.config.tiles.url) {
  L.tileLayer(state.config.tiles.url, { attribution: state.config.tiles.attribution, maxZoom: 19 }).addTo(map);
}
const gridsLayer = L.geoJSON(null, {
  style: () => gridStyle(null),
  onEachFeature: (feature, layer) => {
    state.gridLayers.set(feature.properties.code, layer);
    layer.bindTooltip(feature.properties.name, { sticky: true });
  },
}).addTo(map);
const townshipLayer = L.geoJSON(null, { style: { color: "#7fb6ff", weight: 2, fill: false, opacity: .8 }, interactive: false }).addTo(map);
const markerLayer = L.layerGroup().addTo(map);

async function loadGrids() {
  const [grids, townships] = await Promise.all([
    api("/api/v1/grids?level=grid&simplify=5"),
    api("/api/v1/grids?level=township&simplify=10"),
  ]);
  gridsLayer.clearLayers();
  state.gridLayers.clear();
  gridsLayer.addData(grids);
  townshipLayer.clearLayers();
  townshipLayer.addData(townships);
  const mine = me.unit.code && me.unit.code.length > 6 ? state.gridLayers.get(me.unit.code) : null;
  const bounds = mine ? mine.getBounds() : gridsLayer.getBounds();
  map.invalidateSize();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [10, 10] });
  restyleAllGrids();
}

function gridStyle(stats) {
  const color = stats ? COLORS[stats.worst] : COLORS.none;
  return { color: "#5d8fc4", weight: 0.7, fillColor: color, fillOpacity: stats ? 0.45 : 0.12 };
}

function gridStats(code) {
  let count = 0, worst = null;
  for (const c of state.cases.values()) {
    if (c.grid !== code) continue;
    count += 1;
    if (!worst || RANK[c.light] > RANK[worst]) worst = c.light;
  }
  return count ? { count, worst } : null;
}

function restyleGrid(code) {
  const layer = code && state.gridLayers.get(code);
  if (!layer) return;
  const stats = gridStats(code);
  layer.setStyle(gridStyle(stats));
  const name = layer.feature.properties.name;
  layer.setTooltipContent(stats ? `${name} · ${tr("在办", "open")} ${stats.count}` : name);
}

function restyleAllGrids() {
  for (const code of state.gridLayers.keys()) restyleGrid(code);
}

function drawMarker(c) {
  let marker = state.markers.get(c.id);
  const style = {
    radius: c.severity === "critical" || c.severity === "major" ? 10 : 7,
    color: "#ffffff", weight: 1.5, fillColor: COLORS[c.light] || COLORS.green, fillOpacity: 0.95,
  };
  if (!marker) {
    marker = L.circleMarker([c.lat, c.lon], style).addTo(markerLayer);
    marker.on("click", () => openPanel(c.id));
    state.markers.set(c.id, marker);
  } else {
    marker.setLatLng([c.lat, c.lon]);
    marker.setStyle(style);
  }
  marker.bindTooltip(`${c.id} · ${categoryName(c.category)} · ${label("state", c.state)}`);
}

// ------------------------------------------------------------------ cases

function categoryName(code) {
  return state.config.categories[code] || code;
}

// Events and the snapshot can arrive in any order; the case version decides which is newer.
function upsert(summary) {
  const current = state.cases.get(summary.id);
  const gone = state.finished.get(summary.id);
  if ((current && current.version > summary.version) || (gone !== undefined && gone >= summary.version)) return;
  const oldGrid = current?.grid;
  if (FINAL_STATES.has(summary.state)) {
    state.cases.delete(summary.id);
    state.finished.set(summary.id, summary.version);
    state.markers.get(summary.id)?.remove();
    state.markers.delete(summary.id);
  } else {
    state.cases.set(summary.id, summary);
    drawMarker(summary);
  }
  restyleGrid(summary.grid);
  if (oldGrid && oldGrid !== summary.grid) restyleGrid(oldGrid);
  renderLocalCounters();
}

function renderLocalCounters() {
  let yellow = 0, red = 0;
  for (const c of state.cases.values()) {
    if (c.light === "yellow") yellow += 1;
    if (c.light === "red") red += 1;
  }
  document.getElementById("c-open").textContent = state.cases.size;
  document.getElementById("c-yellow").textContent = yellow;
  document.getElementById("c-red").textContent = red;
}

let statsTimer = null;
function refreshStatsSoon(delay = 300) {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(refreshStats, delay);
}

async function refreshStats() {
  try {
    const s = await api("/api/v1/stats");
    document.getElementById("c-reports").textContent = s.today.reports;
    document.getElementById("c-escalations").textContent = s.today.escalations;
    document.getElementById("c-ontime").textContent = pct(s.period_kpis.on_time_rate);
  } catch (err) {
    console.warn("stats", err);
  }
}

async function loadSnapshot() {
  for (const c of await loadOpenCases(null)) upsert(c);
  refreshStats();
}

// ------------------------------------------------------------------ feed

function feedText(event) {
  const d = event.data || {};
  const inc = d.incident || {};
  const parts = [event.incident_id || "", categoryName(inc.category || "")];
  if (d.action) parts.push(label("action", d.action));
  if (d.reason) parts.push(label("reason", d.reason));
  if (d.to) parts.push(`→ ${label("state", d.to.state)}（${label("tier", d.to.tier)}）`);
  else if (inc.state) parts.push(`${label("state", inc.state)}（${label("tier", inc.tier)}）`);
  return parts.filter(Boolean).join(" · ");
}

function feedRow(event) {
  const kind = event.type.replace(".", "-");
  return el("li", {
    class: "fresh", dataset: { seq: event.seq, incident: event.incident_id || "", type: event.type },
    onclick: () => event.incident_id && openPanel(event.incident_id),
  },
  el("span", { class: "t muted" }, fmtTime(event.at)),
  el("span", { class: `kind ${kind}` }, label("event", event.type)),
  el("span", { class: "what" }, feedText(event)));
}

const feedEvents = [];
function addToFeed(event) {
  const feed = document.getElementById("feed");
  feedEvents.unshift(event);
  feed.prepend(feedRow(event));
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  feedEvents.length = Math.min(feedEvents.length, FEED_MAX);
}

function redrawFeedLabels() {
  const feed = document.getElementById("feed");
  feed.replaceChildren(...feedEvents.map((e) => { const row = feedRow(e); row.classList.remove("fresh"); return row; }));
  document.getElementById("conn").textContent = statusText(lastStatus);
}

// ------------------------------------------------------------------ case panel

let panelTimer = null;
async function openPanel(id) {
  state.panelId = id;
  const panel = document.getElementById("panel");
  panel.hidden = false;
  let view;
  try {
    view = await api(`/api/v1/incidents/${encodeURIComponent(id)}`);
  } catch (err) {
    document.getElementById("panel-body").replaceChildren(el("p", { class: "bad" }, errorText(err)));
    return;
  }
  if (state.panelId !== id) return;
  document.getElementById("panel-title").textContent = `${view.id} · ${categoryName(view.category)}`;
  const due = view.deadlines.filter((d) => d.clock !== "supervise").map((d) => d.due_at).sort()[0];
  const facts = [
    [tr("环节", "Stage"), `${label("state", view.state)}（${label("tier", view.tier)}）`],
    [tr("灯号", "Light"), el("span", {}, el("span", { class: `light ${view.light}` }), label("light", view.light))],
    [tr("等级", "Severity"), el("span", { class: `tag ${view.severity}` }, label("severity", view.severity))],
    [tr("网格", "Grid"), view.grid.name || tr("网格外（待分拣）", "outside grids (triage)")],
    [tr("位置", "Where"), (view.jurisdiction || []).map((u) => u.name).filter(Boolean).slice(1, 3).join(" / ")],
    [tr("地址", "Address"), view.address || "—"],
    [tr("描述", "Description"), view.description],
    [tr("上报人", "Reporter"), [view.reporter.name, view.reporter.phone].filter(Boolean).join(" ") || "—"],
    [tr("时限", "Due"), due ? fmtTime(due, true) : "—"],
    [tr("部门", "Departments"), view.departments.map((d) => `${state.config.departments[d.department] || d.department}(${d.role === "lead" ? tr("主办", "lead") : tr("协办", "co")})`).join("、") || "—"],
    [tr("版本", "Version"), String(view.version)],
  ];
  const photos = el("div", { class: "photos" });
  for (const p of view.photos || []) {
    if (!/^[0-9a-f]{64}$/.test(p)) continue;
    photoUrl(view.id, p, "thumb").then((url) => photos.append(el("img", { src: url, alt: tr("现场照片", "photo") }))).catch(() => {});
  }
  const timeline = el("ol", { class: "timeline", id: "timeline" },
    view.timeline.map((t) => el("li", { dataset: { seq: t.seq, action: t.action } },
      el("span", { class: "t" }, fmtTime(t.at, true)),
      el("b", {}, label("action", t.action)), " ",
      el("span", { class: "muted" }, t.actor), " ",
      t.to_state ? `→ ${label("state", t.to_state)}（${label("tier", t.tier)}）` : "",
      t.note ? el("div", { class: "muted" }, t.note) : null)));
  document.getElementById("panel-body").replaceChildren(
    el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    photos,
    el("h3", {}, tr("处置时间线", "Timeline")),
    timeline,
  );
  // Keep the wall's overview: move the map only when the case is out of sight.
  const marker = state.markers.get(id);
  if (marker && !map.getBounds().contains(marker.getLatLng())) map.panTo(marker.getLatLng());
}

document.getElementById("panel-close").addEventListener("click", () => {
  state.panelId = null;
  document.getElementById("panel").hidden = true;
});

// ------------------------------------------------------------------ live

let lastStatus = "connecting";
function onEvent(event) {
  state.seen.push(event.seq);
  if (event.type === "grids.activated") { loadGrids(); return; }
  const summary = event.data?.incident;
  if (summary) upsert(summary);
  addToFeed(event);
  refreshStatsSoon();
  if (event.incident_id && event.incident_id === state.panelId) {
    clearTimeout(panelTimer);
    panelTimer = setTimeout(() => openPanel(event.incident_id), 150);
  }
}

const stream = new EventStream({
  onEvent,
  onStatus: (s) => {
    lastStatus = s;
    const node = document.getElementById("conn");
    node.textContent = statusText(s);
    node.className = `status ${s}`;
  },
  onWelcome: ({ first }) => { if (first) loadSnapshot(); else refreshStatsSoon(); },
});
window.gdStream = stream;

await loadGrids();
stream.start();
// A wall screen is resized rarely, a phone rotates: refit the jurisdiction to the new size.
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    map.invalidateSize();
    const bounds = gridsLayer.getBounds();
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [10, 10] });
  }, 200);
});
// Lights turn yellow and red with time, not only with events: reconcile with the server now and then.
setInterval(() => loadSnapshot().catch(() => {}), 60_000);
window.gdReady = true;

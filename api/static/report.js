// Field report page for grid workers on a phone: location (GPS or a tap on the map), category, severity,
// description, photos (type and size checked before upload, and again by the server), submit; then "my cases"
// with the actions the workflow allows this user in each case's state.
import {
  EventStream, api, applyLanguage, el, ensureSignedIn, errorText, fmtTime, installLanguageToggle, label, signOut,
  tr,
} from "/static/common.js";

const state = { me: null, config: null, workflow: null, point: null, files: [], key: newKey(), marker: null };
window.gd = state;

function newKey() {
  // crypto.randomUUID needs a secure context; intranet pages are often plain http.
  return `r-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

state.me = await ensureSignedIn(tr("网格员 · 登录", "Grid worker · sign in"));
[state.config, state.workflow] = await Promise.all([api("/api/v1/pages/config"), api("/api/v1/workflows/four_stage")]);
document.getElementById("who").textContent = state.me.display_name;
document.getElementById("signout").addEventListener("click", signOut);

function fillForm() {
  const category = document.getElementById("category");
  const keep = category.value;
  category.replaceChildren(...Object.entries(state.config.categories).map(([code, name]) => el("option", { value: code }, name)));
  if (keep) category.value = keep;
  const severity = document.getElementById("severity");
  const keepS = severity.value || "normal";
  severity.replaceChildren(...["normal", "urgent", "major", "critical"].map((s) => el("option", { value: s }, label("severity", s))));
  severity.value = keepS;
  const mb = (state.config.photo.max_bytes / 1_000_000).toFixed(0);
  document.getElementById("photo-label").textContent = tr(
    `现场照片（JPG/PNG/WebP，每张不超过 ${mb} MB，最多 ${state.config.photo.max_count} 张）`,
    `Photos (JPG/PNG/WebP, up to ${mb} MB each, at most ${state.config.photo.max_count})`);
}

// ------------------------------------------------------------------ tabs

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
}
function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  document.getElementById("tab-new").hidden = name !== "new";
  document.getElementById("tab-mine").hidden = name !== "mine";
  if (name === "mine") loadMine();
  else map.invalidateSize();
}

// ------------------------------------------------------------------ location

const map = L.map("map", { attributionControl: Boolean(state.config.tiles.url) });
if (state.config.tiles.url) L.tileLayer(state.config.tiles.url, { attribution: state.config.tiles.attribution, maxZoom: 19 }).addTo(map);
const grids = await api("/api/v1/grids?level=grid&simplify=5");
let mine = null;
const gridLayer = L.geoJSON(grids, {
  style: (f) => ({ color: "#5d8fc4", weight: f.properties.code === state.me.unit.code ? 2.5 : 0.6, fillColor: f.properties.code === state.me.unit.code ? "#3fa7ff" : "#3d6a99", fillOpacity: f.properties.code === state.me.unit.code ? 0.35 : 0.08 }),
  onEachFeature: (f, layer) => { if (f.properties.code === state.me.unit.code) mine = layer; },
}).addTo(map);
map.fitBounds((mine || gridLayer).getBounds());
map.on("click", (e) => setPoint(e.latlng.lng, e.latlng.lat, tr("地图选点", "picked on the map")));

async function setPoint(lon, lat, how) {
  state.point = { lon, lat };
  if (state.marker) state.marker.setLatLng([lat, lon]);
  else state.marker = L.circleMarker([lat, lon], { radius: 9, color: "#fff", weight: 2, fillColor: "#ff4d4f", fillOpacity: 1 }).addTo(map);
  const where = document.getElementById("where");
  where.textContent = `${how}：${lon.toFixed(5)}, ${lat.toFixed(5)}`;
  try {
    const found = await api(`/api/v1/grids/locate?lon=${lon}&lat=${lat}`);
    where.textContent = `${how}：${found.path.map((u) => u.name).slice(1).join(" / ")}`;
  } catch (err) {
    const near = err.detail?.nearest;
    where.textContent = near
      ? tr(`${how}：不在任何网格内（最近：${near.name}，${Math.round(near.distance_m)} 米），将由县指挥中心分拣`, `${how}: outside every grid (nearest ${near.name}, ${Math.round(near.distance_m)} m); the county will triage it`)
      : `${how}：${errorText(err)}`;
  }
}

document.getElementById("locate").addEventListener("click", () => {
  const where = document.getElementById("where");
  if (!navigator.geolocation) { where.textContent = tr("此浏览器不支持定位，请点击地图", "No geolocation here: tap the map"); return; }
  where.textContent = tr("定位中…", "Locating…");
  navigator.geolocation.getCurrentPosition(
    (pos) => { setPoint(pos.coords.longitude, pos.coords.latitude, tr("当前位置", "my location")); map.setView([pos.coords.latitude, pos.coords.longitude], 16); },
    (err) => { where.textContent = tr(`无法定位（${err.message}），请点击地图选择`, `Cannot locate (${err.message}): tap the map`); },
    { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 });
});

// ------------------------------------------------------------------ photos

document.getElementById("photos").addEventListener("change", (e) => {
  const { types, max_bytes: maxBytes, max_count: maxCount } = state.config.photo;
  const previews = document.getElementById("previews");
  const problems = [];
  state.files = [];
  previews.replaceChildren();
  for (const file of e.target.files) {
    let problem = null;
    if (!types.includes(file.type)) problem = tr("格式不支持", "unsupported type");
    else if (file.size > maxBytes) problem = tr("超过大小限制", "too large");
    else if (state.files.length >= maxCount) problem = tr("超过张数限制", "too many");
    if (problem) problems.push(`${file.name}：${problem}`); else state.files.push(file);
    previews.append(el("figure", { class: problem ? "bad" : "" },
      el("img", { src: URL.createObjectURL(file), alt: file.name }),
      el("figcaption", {}, problem || `${(file.size / 1024).toFixed(0)} KB`)));
  }
  document.getElementById("form-error").textContent = problems.join("；");
});

// ------------------------------------------------------------------ submit

document.getElementById("report-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("form-error");
  error.textContent = "";
  const description = document.getElementById("description").value.trim();
  if (!state.point) { error.textContent = tr("请先选择位置", "Choose a location first"); return; }
  if (!description) { error.textContent = tr("请填写事件描述", "Describe what you saw"); return; }
  const report = {
    lon: state.point.lon, lat: state.point.lat, category: document.getElementById("category").value,
    severity: document.getElementById("severity").value, description,
  };
  const address = document.getElementById("address").value.trim();
  if (address) report.address = address;
  const body = new FormData();
  body.append("report", JSON.stringify(report));
  for (const file of state.files) body.append("photos", file, file.name);
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const view = await api("/api/v1/reports", { method: "POST", body, headers: { "Idempotency-Key": state.key } });
    showResult(view);
    state.key = newKey();
    state.files = [];
    document.getElementById("report-form").reset();
    document.getElementById("previews").replaceChildren();
    fillForm();
  } catch (err) {
    error.textContent = errorText(err);
  } finally {
    button.disabled = false;
  }
});

function showResult(view) {
  const due = view.deadlines.filter((d) => d.clock !== "supervise").map((d) => d.due_at).sort()[0];
  const result = document.getElementById("result");
  result.hidden = false;
  result.replaceChildren(
    el("h2", {}, tr("上报成功", "Reported")),
    el("dl", {},
      el("dt", {}, tr("事件编号", "Case")), el("dd", { id: "result-id" }, view.id),
      el("dt", {}, tr("所属网格", "Grid")), el("dd", { id: "result-grid" }, view.grid.name || tr("网格外，待县指挥中心分拣", "outside grids: county triage")),
      el("dt", {}, tr("当前环节", "Stage")), el("dd", {}, `${label("state", view.state)}（${label("tier", view.tier)}）`),
      el("dt", {}, tr("办理时限", "Due")), el("dd", { id: "result-due" }, due ? fmtTime(due, true) : "—"),
      el("dt", {}, tr("照片", "Photos")), el("dd", {}, String(view.photos.length))),
    el("button", { type: "button", onclick: () => showTab("mine") }, tr("查看我的案件", "See my cases")));
  result.scrollIntoView({ behavior: "smooth" });
}

// ------------------------------------------------------------------ my cases

// Actions that need a choice this page does not offer (a case to merge into, departments, an extension, a rating).
const SKIP_NEEDS = new Set(["target", "departments", "rating", "extension"]);

// The workflow definition says which actions this role may take in a state; conditions the page can judge
// from the case are checked here, the rest by the server (which is the authority either way).
function actionsFor(view) {
  const out = new Map();
  for (const t of state.workflow.transitions) {
    if (t.source !== view.state || !t.roles.includes(state.me.role)) continue;
    if (t.needs.some((n) => SKIP_NEEDS.has(n))) continue;
    const ok = t.conditions.every((c) => {
      if (c === "accepted") return view.accepted;
      if (c === "not_accepted") return !view.accepted;
      if (c.startsWith("tier_is:")) return view.tier === c.slice(8);
      return true;
    });
    if (ok && !out.has(t.trigger)) out.set(t.trigger, t.needs.includes("note"));
  }
  return out;
}

async function loadMine() {
  const list = document.getElementById("mine");
  document.getElementById("mine-error").textContent = "";
  try {
    const page = await api("/api/v1/incidents?limit=50");
    list.replaceChildren(...page.items.map(caseCard));
    if (!page.items.length) list.replaceChildren(el("li", { class: "muted" }, tr("暂无案件", "No cases")));
  } catch (err) {
    document.getElementById("mine-error").textContent = errorText(err);
  }
}

// expected_version guards against acting on a case that moved on. Timers also bump the version (yellow
// warnings, 督办 records) without moving the case; then the action is retried once on the fresh version, as
// long as the case is still in the stage and tier the worker saw.
async function act(view, action, note) {
  const post = (version) => api(`/api/v1/incidents/${encodeURIComponent(view.id)}/actions`, {
    method: "POST", json: { action, note, expected_version: version },
  });
  try {
    return await post(view.version);
  } catch (err) {
    if (err.code !== "stale_version") throw err;
    const fresh = await api(`/api/v1/incidents/${encodeURIComponent(view.id)}`);
    if (fresh.state !== view.state || fresh.tier !== view.tier) {
      throw new Error(tr("案件已被他人处理，请刷新后再操作", "The case has moved on: refresh and try again"));
    }
    return post(fresh.version);
  }
}

function caseCard(view) {
  const note = el("input", { class: "note", placeholder: tr("处理说明（部分操作必填）", "Note (needed for some actions)"), maxlength: 2000 });
  const msg = el("p", { class: "msg" });
  const buttons = [...actionsFor(view)].map(([action, needsNote]) => el("button", {
    type: "button", class: action === "accept" || action === "resolve" || action === "verify_pass" ? "primary" : "",
    dataset: { action },
    onclick: async (e) => {
      if (needsNote && !note.value.trim()) { msg.className = "msg bad"; msg.textContent = tr("此操作需要填写说明", "This action needs a note"); return; }
      e.target.disabled = true;
      try {
        await act(view, action, note.value.trim() || undefined);
        await loadMine();
      } catch (err) {
        msg.className = "msg bad";
        msg.textContent = errorText(err);
        e.target.disabled = false;
      }
    },
  }, label("action", action)));
  const due = view.deadlines.filter((d) => d.clock !== "supervise").map((d) => d.due_at).sort()[0];
  return el("li", { class: "case", dataset: { incident: view.id, state: view.state, version: view.version } },
    el("h3", {}, el("span", {}, el("span", { class: `light ${view.light}` }), view.id),
      el("span", { class: "tag" }, `${label("state", view.state)}·${label("tier", view.tier)}`)),
    el("dl", {},
      el("dt", {}, tr("类型", "Category")), el("dd", {}, `${state.config.categories[view.category] || view.category} · ${label("severity", view.severity)}`),
      el("dt", {}, tr("网格", "Grid")), el("dd", {}, view.grid.name || "—"),
      el("dt", {}, tr("时限", "Due")), el("dd", {}, due ? fmtTime(due, true) : "—")),
    el("p", { class: "desc" }, view.description),
    buttons.length ? note : null,
    buttons.length ? el("div", { class: "actions" }, buttons) : null,
    msg);
}

document.getElementById("reload").addEventListener("click", loadMine);

// Keep "my cases" current: the server sends only events in this user's scope.
let mineTimer = null;
new EventStream({
  onEvent: () => {
    if (document.getElementById("tab-mine").hidden) return;
    clearTimeout(mineTimer);
    mineTimer = setTimeout(loadMine, 300);
  },
}).start();

installLanguageToggle(document.getElementById("lang"), () => { fillForm(); if (!document.getElementById("tab-mine").hidden) loadMine(); });
fillForm();
applyLanguage();
window.gdReady = true;

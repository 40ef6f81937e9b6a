// Supervisor console (督查台): escalation log with filters and CSV export, chain check, overdue list, KPI charts.
// It listens to the event stream so escalations show up without pressing "search" again.
import {
  EventStream, LABELS, api, applyLanguage, el, ensureSignedIn, errorText, fmtDuration, fmtTime,
  installLanguageToggle, label, pct, signOut, statusText, token, tr,
} from "/static/common.js";

const SVG = "http://www.w3.org/2000/svg";
const state = { me: null, config: null, cursor: null, units: new Map() };
window.gd = state;

state.me = await ensureSignedIn(tr("督查台 · 登录", "Supervisor console · sign in"));
state.config = await api("/api/v1/pages/config");
for (const u of state.config.units) state.units.set(u.code, u);
document.getElementById("who").textContent = state.me.display_name;
document.getElementById("signout").addEventListener("click", signOut);

function fillSelects() {
  const j = document.getElementById("f-jurisdiction");
  const keep = { j: j.value, r: document.getElementById("f-reason").value, t: document.getElementById("f-tier").value, d: document.getElementById("f-department").value };
  const indent = { county: "", township: "　", community: "　　" };
  j.replaceChildren(el("option", { value: "" }, tr("全部", "All")),
    ...state.config.units.filter((u) => u.level !== "grid").map((u) => el("option", { value: u.code }, `${indent[u.level] || ""}${u.name}`)));
  document.getElementById("f-reason").replaceChildren(el("option", { value: "" }, tr("全部", "All")),
    ...Object.keys(LABELS.zh.reason).map((r) => el("option", { value: r }, label("reason", r))));
  document.getElementById("f-tier").replaceChildren(el("option", { value: "" }, tr("全部", "All")),
    ...Object.keys(LABELS.zh.tier).map((t) => el("option", { value: t }, label("tier", t))));
  document.getElementById("f-department").replaceChildren(el("option", { value: "" }, tr("全部", "All")),
    ...Object.entries(state.config.departments).map(([code, name]) => el("option", { value: code }, name)));
  j.value = keep.j; document.getElementById("f-reason").value = keep.r;
  document.getElementById("f-tier").value = keep.t; document.getElementById("f-department").value = keep.d;
}

function unitName(code) {
  return state.units.get(code)?.name || code || "";
}

// ------------------------------------------------------------------ the log

function filterParams() {
  const form = new FormData(document.getElementById("filters"));
  const q = new URLSearchParams();
  for (const [key, value] of form.entries()) {
    if (!value) continue;
    // datetime-local is the browser's local time; the API wants an instant.
    q.set(key, key === "since" || key === "until" ? new Date(value).toISOString() : value);
  }
  return q;
}

function logRow(e) {
  return el("tr", { dataset: { id: e.id, incident: e.incident_id, reason: e.reason } },
    el("td", { class: "nowrap" }, fmtTime(e.at, true)),
    el("td", { class: "nowrap" }, e.incident_id),
    el("td", {}, label("reason", e.reason)),
    el("td", {}, e.from.tier ? `${label("tier", e.from.tier)} ${unitName(e.from.unit)}` : "—"),
    el("td", {}, `${label("tier", e.to.tier)} ${unitName(e.to.unit)}`),
    el("td", { class: e.late_seconds ? "late" : "" }, e.late_seconds ? fmtDuration(e.late_seconds) : "—"),
    el("td", {}, e.actor === "system" ? tr("系统", "system") : e.actor),
    el("td", {}, e.note || ""));
}

async function loadLog(reset = true) {
  const q = filterParams();
  q.set("limit", "200");
  if (!reset && state.cursor) q.set("cursor", state.cursor);
  try {
    const page = await api(`/api/v1/escalations?${q}`);
    const body = document.getElementById("log-rows");
    // Newest first on screen; the API pages oldest first by id.
    const rows = page.items.slice().reverse().map(logRow);
    if (reset) body.replaceChildren(...rows); else body.prepend(...rows);
    state.cursor = page.next_cursor;
    document.getElementById("more").hidden = !page.next_cursor;
  } catch (err) {
    document.getElementById("log-rows").replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "bad" }, errorText(err))));
  }
}

async function loadChain() {
  const node = document.getElementById("chain");
  try {
    const c = await api("/api/v1/escalations/verify");
    node.className = `chain ${c.ok ? "ok" : "bad"}`;
    node.textContent = c.ok
      ? tr(`日志链校验：完整（${c.entries} 条）`, `Log chain: intact (${c.entries} entries)`)
      : tr(`日志链校验：第 ${c.first_broken_id} 条被篡改（${c.problem}）`, `Log chain: broken at #${c.first_broken_id} (${c.problem})`);
  } catch (err) {
    node.className = "chain muted";
    node.textContent = errorText(err);
  }
}

async function exportCsv() {
  const q = filterParams();
  q.set("format", "csv");
  const response = await fetch(`/api/v1/escalations?${q}`, { headers: { Authorization: `Bearer ${token()}` } });
  if (!response.ok) { alert(tr("导出失败", "Export failed")); return; }
  const url = URL.createObjectURL(await response.blob());
  const a = document.getElementById("download");
  a.href = url;
  a.download = `escalations-${new Date().toISOString().slice(0, 10)}.csv`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ------------------------------------------------------------------ overdue

async function loadOverdue() {
  try {
    const page = await api("/api/v1/stats/overdue?limit=200");
    document.getElementById("overdue-rows").replaceChildren(...page.items.map((c) => el("tr", { dataset: { incident: c.id } },
      el("td", { class: "nowrap" }, el("span", { class: `light ${c.light}` }), c.id),
      el("td", {}, state.config.categories[c.category] || c.category),
      el("td", {}, `${label("state", c.state)}（${label("tier", c.tier)}）`),
      el("td", {}, c.unit.name || c.unit.code),
      el("td", { class: "late" }, fmtDuration(c.late_seconds)))));
    if (!page.items.length) {
      document.getElementById("overdue-rows").replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted" }, tr("暂无超时事件", "Nothing overdue"))));
    }
  } catch (err) {
    console.warn(err);
  }
}

// ------------------------------------------------------------------ KPIs and charts (plain SVG)

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function barChart(container, groups, series, { percent = false } = {}) {
  const W = 600, H = 200, pad = { l: 36, r: 8, t: 10, b: 28 };
  const top = Math.max(0, ...groups.flatMap((g) => series.map((s) => g.values[s.key] || 0)));
  // Counts get whole-number ticks (a multiple of 4); rates run to the next 25 %.
  const max = percent ? Math.max(0.25, Math.ceil(top * 4) / 4) : Math.max(4, Math.ceil(top / 4) * 4);
  const gw = (W - pad.l - pad.r) / Math.max(1, groups.length);
  const bw = Math.max(4, (gw - 10) / series.length);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((H - pad.t - pad.b) * i) / 4;
    root.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, stroke: "#244a73", "stroke-width": 1 }));
    const v = max * (1 - i / 4);
    root.append(svg("text", { x: pad.l - 4, y: y + 4, "text-anchor": "end" }, percent ? `${Math.round(v * 100)}%` : Math.round(v)));
  }
  groups.forEach((g, i) => {
    series.forEach((s, j) => {
      const v = g.values[s.key] || 0;
      const h = ((H - pad.t - pad.b) * v) / max;
      const x = pad.l + i * gw + 5 + j * bw;
      root.append(svg("rect", { x, y: H - pad.b - h, width: bw - 2, height: h, fill: s.color },
        svg("title", {}, `${g.label} ${s.name}: ${percent ? pct(v) : v}`)));
    });
    root.append(svg("text", { x: pad.l + i * gw + gw / 2, y: H - 8, "text-anchor": "middle" }, g.label));
  });
  const legend = el("div", { class: "legend" }, series.map((s) => el("span", {}, el("i", { style: `background:${s.color}` }), s.name)));
  container.replaceChildren(root, legend);
}

async function loadStats() {
  let s;
  try { s = await api("/api/v1/stats"); } catch (err) { console.warn(err); return; }
  const k = s.period_kpis;
  const tiles = [
    [s.today.reports, tr("今日上报", "Reported today")],
    [s.open.total, tr("在办事件", "Open")],
    [s.today.escalations, tr("今日升级", "Escalations today")],
    [pct(k.on_time_rate), tr("按期结案率", "On-time closure")],
    [pct(k.rework_rate), tr("返工率", "Rework rate")],
    [pct(k.satisfaction_rate), tr("满意率", "Satisfaction")],
    [k.mean_accept_minutes === null ? "—" : fmtDuration(k.mean_accept_minutes * 60), tr("平均受理用时", "Mean time to accept")],
  ];
  document.getElementById("kpis").replaceChildren(...tiles.map(([v, name]) => el("div", { class: "kpi" }, el("b", {}, v), el("span", {}, name))));
  barChart(document.getElementById("chart-daily"),
    s.daily.map((d) => ({ label: d.date.slice(5), values: d })),
    [
      { key: "reports", name: tr("上报", "reported"), color: "#3fa7ff" },
      { key: "closed", name: tr("结案", "closed"), color: "#2ecc71" },
      { key: "escalations", name: tr("升级", "escalated"), color: "#ff4d4f" },
    ]);
  barChart(document.getElementById("chart-tiers"),
    Object.entries(k.escalation_by_tier).map(([tier, v]) => ({ label: label("tier", tier), values: { rate: v.rate || 0 } })),
    [{ key: "rate", name: tr("升级率", "escalation rate"), color: "#f5c518" }], { percent: true });
  barChart(document.getElementById("chart-states"),
    Object.entries(s.open.by_state).map(([st, n]) => ({ label: label("state", st), values: { n } })),
    [{ key: "n", name: tr("件数", "cases"), color: "#3fa7ff" }]);
}

// ------------------------------------------------------------------ wiring

function refreshAll() {
  loadLog(true); loadChain(); loadOverdue(); loadStats();
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshAll, 400);
}

document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); loadLog(true); });
document.getElementById("more").addEventListener("click", () => loadLog(false));
document.getElementById("export").addEventListener("click", exportCsv);
installLanguageToggle(document.getElementById("lang"), () => { fillSelects(); refreshAll(); });
fillSelects();
applyLanguage();
refreshAll();

const LOGGED = new Set(["incident.escalated", "incident.overdue", "incident.supervised", "incident.urged", "incident.created", "incident.transitioned"]);
new EventStream({
  onEvent: (event) => { if (LOGGED.has(event.type)) refreshSoon(); },
  onStatus: (s) => {
    const node = document.getElementById("conn");
    node.textContent = statusText(s);
    node.className = `status ${s}`;
  },
}).start();
window.gdReady = true;

// Shared by the three pages: sign-in, the API client, the event stream with resume, labels (zh / en), DOM helpers.
// Everything is served by the app itself: no CDN, no fonts or scripts from elsewhere.

const TOKEN_KEY = "griddispatch.token";
const LANG_KEY = "griddispatch.lang";

// ------------------------------------------------------------------ labels

export const LABELS = {
  zh: {
    state: {
      triage: "待分拣", grid_discovery: "网格发现", community_call: "社区呼叫", tiered_response: "分级响应",
      coordinated_handling: "协同处置", verification: "核查", closed: "结案", rejected: "不予受理", merged: "已合并",
      suspended: "挂账",
    },
    tier: { grid: "网格", community: "社区", township: "街道", county: "县级" },
    severity: { normal: "一般", urgent: "紧急", major: "重大", critical: "特别重大" },
    light: { green: "绿灯", yellow: "黄灯", red: "红灯" },
    action: {
      report: "上报", accept: "受理", resolve: "办结", call_community: "呼叫社区", reject: "不予受理", merge: "合并",
      escalate: "上报上级", return_to_grid: "退回网格", dispatch: "派遣部门", dept_accept: "部门受理",
      dept_complete: "部门办结", dept_return: "部门退回", verify_pass: "核查通过", verify_fail: "核查不通过",
      rate: "评价", reopen: "重新办理", assign_grid: "分派网格", auto_escalate: "超时自动升级", comment: "备注",
      urge: "催办", supervise: "督办", overdue: "超时督办", warning: "黄灯预警", skip_escalate: "越级上报",
      request_extension: "申请延期", approve_extension: "批准延期", deny_extension: "驳回延期",
      request_suspend: "申请挂账", approve_suspend: "批准挂账", deny_suspend: "驳回挂账", resume: "恢复办理",
    },
    reason: {
      ack_timeout: "响应超时", resolve_timeout: "处置超时", manual: "人工上报", severity: "越级上报", rework: "返工",
      dept_timeout: "部门超时", dept_return: "部门退回", supervise: "督办", urge: "催办",
    },
    event: {
      "incident.created": "新事件", "incident.transitioned": "流转", "incident.escalated": "升级",
      "incident.warning": "黄灯预警", "incident.overdue": "超时督办", "incident.assigned": "分派",
      "incident.merged": "合并", "incident.rated": "评价", "incident.commented": "备注",
      "incident.urged": "催办", "incident.supervised": "督办", "grids.activated": "网格更新",
      "incident.notified": "值班通知", "incident.suspended": "挂账", "incident.resumed": "恢复办理",
      "incident.extended": "延期",
    },
  },
  en: {
    state: {
      triage: "Triage", grid_discovery: "Grid", community_call: "Community call", tiered_response: "Tiered response",
      coordinated_handling: "Departments", verification: "Verification", closed: "Closed", rejected: "Rejected",
      merged: "Merged", suspended: "Suspended",
    },
    tier: { grid: "Grid", community: "Community", township: "Township", county: "County" },
    severity: { normal: "Normal", urgent: "Urgent", major: "Major", critical: "Critical" },
    light: { green: "Green", yellow: "Yellow", red: "Red" },
    action: {
      report: "Reported", accept: "Accept", resolve: "Resolve", call_community: "Call community", reject: "Reject",
      merge: "Merge", escalate: "Escalate", return_to_grid: "Return to grid", dispatch: "Dispatch",
      dept_accept: "Dept. accept", dept_complete: "Dept. complete", dept_return: "Dept. return",
      verify_pass: "Verify: pass", verify_fail: "Verify: fail", rate: "Rate", reopen: "Reopen",
      assign_grid: "Assign grid", auto_escalate: "Auto-escalated", comment: "Comment", urge: "Urge",
      supervise: "Supervise", overdue: "Overdue", warning: "Yellow warning", skip_escalate: "Skip a tier",
      request_extension: "Ask extension", approve_extension: "Approve extension", deny_extension: "Deny extension",
      request_suspend: "Ask suspension", approve_suspend: "Approve suspension", deny_suspend: "Deny suspension",
      resume: "Resume",
    },
    reason: {
      ack_timeout: "Ack timeout", resolve_timeout: "Resolve timeout", manual: "Manual", severity: "Severity",
      rework: "Rework", dept_timeout: "Dept. timeout", dept_return: "Dept. return", supervise: "Supervise",
      urge: "Urge",
    },
    event: {
      "incident.created": "New", "incident.transitioned": "Moved", "incident.escalated": "Escalated",
      "incident.warning": "Warning", "incident.overdue": "Overdue", "incident.assigned": "Assigned",
      "incident.merged": "Merged", "incident.rated": "Rated", "incident.commented": "Comment",
      "incident.urged": "Urged", "incident.supervised": "Supervised", "grids.activated": "Grids updated",
      "incident.notified": "On duty notified", "incident.suspended": "Suspended", "incident.resumed": "Resumed",
      "incident.extended": "Extended",
    },
  },
};

export function lang() {
  return localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
}

export function label(kind, key) {
  if (key === null || key === undefined) return "";
  return LABELS[lang()][kind]?.[key] ?? key;
}

// Static texts carry data-zh / data-en; the toggle swaps them without a reload.
export function applyLanguage() {
  const l = lang();
  document.documentElement.lang = l === "en" ? "en" : "zh-CN";
  for (const node of document.querySelectorAll("[data-zh]")) {
    const text = node.dataset[l] ?? node.dataset.zh;
    if (node.placeholder !== undefined && (node.tagName === "INPUT" || node.tagName === "TEXTAREA")) {
      node.placeholder = text;
    } else {
      node.textContent = text;
    }
  }
}

export function tr(zh, en) {
  return lang() === "en" ? en : zh;
}

export function installLanguageToggle(button, onChange) {
  button.addEventListener("click", () => {
    localStorage.setItem(LANG_KEY, lang() === "en" ? "zh" : "en");
    applyLanguage();
    onChange?.();
  });
}

// ------------------------------------------------------------------ DOM

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmtTime(iso, withDate = false) {
  if (!iso) return "";
  const d = new Date(iso);
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: "Asia/Shanghai" };
  if (withDate) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
  return d.toLocaleString(lang() === "en" ? "en-GB" : "zh-CN", opts);
}

export function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return lang() === "en" ? "< 1m" : "不足1分钟";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (lang() === "en") return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m`;
  return d ? `${d}天${h}小时` : h ? `${h}小时${m}分` : `${m}分钟`;
}

export function pct(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)}%`;
}

// ------------------------------------------------------------------ API

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function signOut() {
  localStorage.removeItem(TOKEN_KEY);
  location.reload();
}

export async function api(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
  const h = { ...headers };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body });
  if (response.status === 401 && t) {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  }
  if (!response.ok) {
    let payload = {};
    try { payload = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, payload.code || "error", payload.detail || response.statusText);
  }
  return raw ? response : response.json();
}

export function errorText(err) {
  if (err instanceof ApiError) {
    const d = err.detail;
    if (Array.isArray(d)) return d.map((e) => `${e.field}: ${e.message}`).join("；");
    return `${typeof d === "string" ? d : JSON.stringify(d)} (${err.status} ${err.code})`;
  }
  return String(err?.message || err);
}

async function signIn(username, password) {
  const form = new URLSearchParams({ username, password });
  const response = await fetch("/api/v1/auth/token", { method: "POST", body: form });
  if (!response.ok) throw new Error(tr("用户名或密码错误", "Wrong username or password"));
  localStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
}

// Resolves with the signed-in user; shows a sign-in form first when there is no valid token.
export async function ensureSignedIn(title) {
  if (token()) {
    try { return await api("/api/v1/pages/me"); } catch { localStorage.removeItem(TOKEN_KEY); }
  }
  return new Promise((resolve) => {
    const message = el("p", { class: "login-error", role: "alert" });
    const user = el("input", { name: "username", autocomplete: "username", required: true, "data-zh": "用户名", "data-en": "Username" });
    const pass = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true, "data-zh": "密码", "data-en": "Password" });
    const form = el("form", { class: "login-box" },
      el("h1", {}, title),
      el("label", {}, el("span", { "data-zh": "用户名", "data-en": "Username" }), user),
      el("label", {}, el("span", { "data-zh": "密码", "data-en": "Password" }), pass),
      el("button", { type: "submit", class: "primary", "data-zh": "登录", "data-en": "Sign in" }),
      message);
    const overlay = el("div", { class: "login-overlay" }, form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      message.textContent = "";
      try {
        await signIn(user.value.trim(), pass.value);
        const me = await api("/api/v1/pages/me");
        overlay.remove();
        resolve(me);
      } catch (err) {
        message.textContent = errorText(err);
      }
    });
    document.body.append(overlay);
    applyLanguage();
    user.focus();
  });
}

// ------------------------------------------------------------------ cases

// The list and detail endpoints return the full view; events carry a summary. Pages keep summaries.
export function summaryOf(view) {
  const due = (view.deadlines || []).filter((d) => d.clock !== "supervise").map((d) => d.due_at).sort()[0] || null;
  return {
    id: view.id, state: view.state, tier: view.tier, category: view.category, severity: view.severity,
    grid: view.grid?.code ?? null, lon: view.location.lon, lat: view.location.lat, light: view.light,
    deadline: due, departments: (view.departments || []).map((d) => d.department), version: view.version,
  };
}

export const FINAL_STATES = new Set(["closed", "rejected", "merged"]);
export const OPEN_STATES = ["triage", "grid_discovery", "community_call", "tiered_response", "coordinated_handling", "verification"];

export async function loadOpenCases(jurisdiction) {
  const out = [];
  for (const state of OPEN_STATES) {
    let cursor = null;
    do {
      const q = new URLSearchParams({ state, limit: "500" });
      if (jurisdiction) q.set("jurisdiction", jurisdiction);
      if (cursor) q.set("cursor", cursor);
      const page = await api(`/api/v1/incidents?${q}`);
      out.push(...page.items.map(summaryOf));
      cursor = page.next_cursor;
    } while (cursor && out.length < 5000);
  }
  return out;
}

// A photo is behind the login, so it is fetched with the token and shown from a blob URL.
export async function photoUrl(incidentId, photoId, size = "thumb") {
  const response = await api(`/api/v1/incidents/${encodeURIComponent(incidentId)}/photos/${photoId}?size=${size}`, { raw: true });
  return URL.createObjectURL(await response.blob());
}

// ------------------------------------------------------------------ the event stream

// `/ws/events` with resume: it remembers the last seq it handed on, reconnects with `since` = that seq after a
// drop (server restart, network blip), and drops anything at or below it, so a page sees every event once.
export class EventStream {
  constructor({ jurisdiction = null, onEvent, onStatus, onWelcome }) {
    this.jurisdiction = jurisdiction;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.onWelcome = onWelcome || (() => {});
    this.lastSeq = null;
    this.retry = 0;
    this.closed = false;
  }

  start() {
    this.closed = false;
    this.connect();
    return this;
  }

  stop() {
    this.closed = true;
    this.ws?.close();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/events`);
    this.ws = ws;
    this.onStatus("connecting");
    ws.onopen = () => {
      const hello = { token: token(), since: this.lastSeq };
      if (this.jurisdiction) hello.jurisdiction = this.jurisdiction;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "welcome") {
        const first = this.lastSeq === null;
        if (first) this.lastSeq = event.seq;
        this.retry = 0;
        this.onStatus("live");
        this.onWelcome({ seq: event.seq, first });
        return;
      }
      if (event.type === "heartbeat" || typeof event.seq !== "number") return;
      if (this.lastSeq !== null && event.seq <= this.lastSeq) return; // already seen: never twice
      this.lastSeq = event.seq;
      this.onEvent(event);
    };
    ws.onclose = () => {
      if (this.closed) return;
      this.onStatus("reconnecting");
      const wait = Math.min(5000, 300 * 2 ** this.retry++);
      setTimeout(() => this.connect(), wait);
    };
    ws.onerror = () => ws.close();
  }
}

export function statusText(status) {
  return {
    connecting: tr("连接中…", "Connecting…"),
    live: tr("实时", "Live"),
    reconnecting: tr("断线重连中…", "Reconnecting…"),
  }[status] || status;
}

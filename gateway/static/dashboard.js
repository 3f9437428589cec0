// rl-gateway dashboard: polls /admin/dashboard/data every 2 s and draws it as inline SVG.
// No libraries, no requests to any other origin. The admin key comes from ?key= (or #key=),
// else from a prompt when the gateway answers 401; it is kept in sessionStorage only.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#2f6fde", "#e0742b", "#2aa876", "#c23b8c", "#8a5cd6", "#c9a227", "#3bb0c9", "#6b7280"];
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 640, H = 240, PAD = { left: 48, right: 12, top: 12, bottom: 26 };

let key = takeKeyFromUrl() || sessionStorage.getItem("rlgw-admin-key") || "";
let declined = false;  // the operator cancelled the key prompt: stop asking until a reload
let colorOf = {};

function takeKeyFromUrl() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.slice(1));
  const found = url.searchParams.get("key") || hash.get("key");
  if (found) {
    sessionStorage.setItem("rlgw-admin-key", found);
    url.searchParams.delete("key");
    url.hash = "";
    history.replaceState(null, "", url.pathname + url.search);  // keep the key out of the address bar
  }
  return found;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  const resp = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if ((resp.status === 401 || resp.status === 403) && !declined) {
    const entered = prompt(resp.status === 401 ? "Admin API key for this gateway" : "This key is not an admin key; admin key:");
    declined = !entered;
    if (entered) {
      key = entered.trim();
      sessionStorage.setItem("rlgw-admin-key", key);
      return api(method, path, body);
    }
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.status + " " + resp.statusText);
  return data;
}

// ---- small DOM helpers -------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.onclick = v;
    else if (k === "swatch") node.style.background = v;  // CSSOM: the CSP forbids inline style attributes
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const known = (x) => x !== null && x !== undefined && Number.isFinite(Number(x));
// digits >= 1: the trailing-zero trim would eat an integer's own zeros at digits 0
const fmt = (x, digits = 3) => (known(x) ? Number(x).toFixed(digits).replace(/\.?0+$/, "") : "–");
const pct = (x) => (known(x) ? (100 * x).toFixed(1) + "%" : "–");
// Any JSON value as text: numbers formatted, objects as "k: v" pairs (a decision's per-replica load_ms)
function text(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return fmt(v);
  if (Array.isArray(v)) return "[" + v.map(text).join(", ") + "]";
  if (typeof v === "object") return "{" + Object.entries(v).map(([k, x]) => `${k}: ${text(x)}`).join(", ") + "}";
  return String(v);
}
const figures = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k}=${text(v)}`).join("  ");
const clamp = (x, lo, hi) => (known(x) ? Math.min(hi, Math.max(lo, x)) : x);
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

// ---- charts ------------------------------------------------------------------------------
// series: [{name, color, points: [{x, y, lo, hi}]}]; x in unix seconds; fromZero: counts.
// range [lo, hi]: the axis spans at least it (wider only for a mean outside it); bands are clipped to the axis.
function lineChart(svg, series, xRange, fromZero, range) {
  svg.replaceChildren();
  const ys = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.lo, p.hi])).filter(known);
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  if (range) {
    const means = series.flatMap((s) => s.points.map((p) => p.y)).filter(known);
    [y0, y1] = [Math.min(range[0], ...means), Math.max(range[1], ...means)];
    series = series.map((s) => ({ ...s, points: s.points.map((p) => ({ ...p, lo: clamp(p.lo, y0, y1), hi: clamp(p.hi, y0, y1) })) }));
  } else {
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const span = y1 - y0; y0 -= span * 0.05; y1 += span * 0.05;
  }
  if (fromZero) y0 = 0;
  const [x0, x1] = xRange;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0 || 1)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (i / 4) * (y1 - y0);
    svg.append(el("svg:line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y) }));
    svg.append(el("svg:text", { x: PAD.left - 6, y: sy(y) + 4, "text-anchor": "end" }, fmt(y, 2)));
  }
  svg.append(el("svg:line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  svg.append(el("svg:line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  svg.append(el("svg:text", { x: PAD.left, y: H - 8 }, clock(x0)));
  svg.append(el("svg:text", { x: W - PAD.right, y: H - 8, "text-anchor": "end" }, clock(x1)));
  if (!ys.length) svg.append(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in this window yet"));
  for (const s of series) {
    const banded = s.points.filter((p) => known(p.lo) && known(p.hi));
    if (banded.length > 1) {
      const upper = banded.map((p) => `${sx(p.x)},${sy(p.hi)}`);
      const lower = banded.map((p) => `${sx(p.x)},${sy(p.lo)}`).reverse();
      svg.append(el("svg:polygon", { class: "band", fill: s.color, points: upper.concat(lower).join(" "), "data-version": s.name }));
    }
    s.points = s.points.filter((p) => known(p.y));
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    svg.append(el("svg:path", { class: "line", stroke: s.color, d, "data-version": s.name }));
    for (const p of s.points) {
      const dot = el("svg:circle", { class: "pt", cx: sx(p.x), cy: sy(p.y), r: 3.5, fill: s.color, "data-version": s.name });
      dot.append(el("svg:title", {}, `${s.name} ${clock(p.x)}: ${fmt(p.y)}` + (p.n !== undefined ? ` (n=${p.n})` : "")));
      svg.append(dot);
    }
  }
}

function drawCharts(data) {
  const half = data.bucket_s / 2;
  const xRange = [data.buckets[0], data.buckets[data.buckets.length - 1] + data.bucket_s];
  const reward = data.versions.map((v) => ({
    name: v.id, color: colorOf[v.id],
    points: v.reward_series.map((p) => ({ x: p.t + half, y: p.mean, lo: p.low, hi: p.high, n: p.n })),
  }));
  lineChart(document.getElementById("reward-chart"), reward, xRange, false, [0, 1]);
  const traffic = data.versions
    .filter((v) => v.requests > 0)
    .map((v) => ({ name: v.id, color: colorOf[v.id], points: v.requests_series.map((n, i) => ({ x: data.buckets[i] + half, y: n })) }));
  lineChart(document.getElementById("traffic-chart"), traffic, xRange, true);
  document.getElementById("legend").replaceChildren(
    ...data.versions.map((v) => el("span", {}, el("span", { class: "swatch", swatch: colorOf[v.id] }), v.id)),
  );
}

// ---- tables ------------------------------------------------------------------------------
function action(label, vid, verb, cls) {
  return el("button", {
    class: cls || "", "data-action": verb, "data-version": vid,
    onclick: async () => {
      try {
        await api("POST", `/admin/versions/${encodeURIComponent(vid)}/${verb}`, { reason: "dashboard: operator " + verb });
        await refresh();
      } catch (err) { showStatus(`${verb} ${vid}: ${err.message}`, true); }
    },
  }, label);
}

function drawVersions(data) {
  const rows = data.versions.map((v) => {
    const buttons = [];
    if (v.status !== "serving") buttons.push(action("promote", v.id, "promote"));
    if ((v.status === "serving" && v.id !== "base") || v.status === "canary") buttons.push(action("rollback", v.id, "rollback", "danger"));
    buttons.push(v.pinned ? action("unpin", v.id, "unpin") : action("pin", v.id, "pin"));
    const [lo, hi] = [Math.min(0, v.reward ?? 0), Math.max(1, v.reward ?? 1)];  // the reward's range
    const interval = v.reward_interval
      ? `${fmt(clamp(v.reward_interval[0], lo, hi))} … ${fmt(clamp(v.reward_interval[1], lo, hi))}` : "–";
    return el("tr", { "data-version": v.id },
      el("td", {}, el("span", { class: "swatch", swatch: colorOf[v.id] }), v.id + (v.pinned ? " 📌" : "")),
      el("td", {}, v.parent || "–"), el("td", { class: "status-" + v.status }, v.status),
      el("td", {}, pct(v.share)), el("td", {}, pct(v.traffic_share)), el("td", {}, v.episodes),
      el("td", {}, fmt(v.reward)), el("td", {}, interval), el("td", {}, v.requests),
      el("td", {}, pct(v.error_rate)), el("td", {}, fmt(v.latency_p50_ms, 1)), el("td", {}, fmt(v.latency_p99_ms, 1)),
      el("td", {}, ...buttons));
  });
  document.querySelector("#versions tbody").replaceChildren(...rows);
}

function drawDecisions(data) {
  const rows = data.decisions.map((d) => el("tr", {},
    el("td", {}, clock(d.at)), el("td", {}, d.version), el("td", {}, d.event), el("td", {}, d.status),
    el("td", {}, d.reason || ""), el("td", { class: "figures" }, figures(d.figures))));
  document.querySelector("#decisions tbody").replaceChildren(...rows);
}

// Version events of one kind (alarms, eval-gate results): their panel shows once any exist.
function drawEvents(id, events) {
  document.getElementById(id + "-panel").hidden = !events.length;
  const rows = events.map((e) => el("tr", { "data-version": e.version },
    el("td", {}, clock(e.at)), el("td", {}, e.version), el("td", {}, e.event), el("td", {}, e.reason || "–"),
    el("td", { class: "figures" }, figures(e.figures))));
  document.querySelector(`#${id} tbody`).replaceChildren(...rows);
}

// ---- the learner: figures per version and per step (ledger/training.py) ------------------
// Either name of a renamed figure (ledger/training.py): the learner's newer one first.
const pick = (f, ...names) => names.map((n) => f[n]).find(known);
const SHOWN = new Set(["step", "steps", "version", "samples", "tokens", "seconds", "skipped", "loss", "reward_mean",
  "grad_norm", "tokens_per_s", "entropy", "kl_base", "kl", "ratio_mean", "ratio_min", "ratio_max", "clipped_frac",
  "clipped_fraction", "per_step"]);
function learnerCells(f) {
  const skipped = Object.entries(f.skipped || {}).sort().map(([k, n]) => `${k} ${n}`).join(", ") || "none";
  const others = Object.entries(f).filter(([k]) => !SHOWN.has(k));  // figures the learner adds later
  return [el("td", {}, f.samples ?? "–"), el("td", {}, f.tokens ?? "–"), el("td", {}, fmt(f.tokens_per_s, 1)),
    el("td", {}, fmt(f.entropy)), el("td", {}, fmt(pick(f, "kl_base", "kl"), 4)), el("td", {}, fmt(f.ratio_mean)),
    el("td", {}, `${fmt(f.ratio_min)} … ${fmt(f.ratio_max)}`), el("td", {}, pct(pick(f, "clipped_frac", "clipped_fraction"))),
    el("td", {}, skipped),
    el("td", { class: "figures" }, others.length ? others.map(([k, v]) => `${k}=${text(v)}`).join("  ") : "–")];
}

function drawLearner(data) {
  const versions = data.learner.map((v) => el("tr", { "data-version": v.version },
    el("td", {}, el("span", { class: "swatch", swatch: colorOf[v.version] || "#888" }), v.version),
    el("td", { class: "status-" + v.status }, v.status), el("td", {}, v.summary.steps ?? v.steps.length), ...learnerCells(v.summary)));
  if (!versions.length) versions.push(el("tr", {}, el("td", { colspan: 13, class: "muted" }, "no trained version yet")));
  document.querySelector("#learner-versions tbody").replaceChildren(...versions);
  const steps = data.learner.flatMap((v) => v.steps.map((s) => ({ ...s, version: v.version })))
    .sort((a, b) => b.step - a.step).slice(0, 20);
  const rows = steps.map((s) => el("tr", {}, el("td", {}, s.step), el("td", {}, s.version), ...learnerCells(s)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 12, class: "muted" }, "no training step yet")));
  document.querySelector("#learner-steps tbody").replaceChildren(...rows);
}

function drawRubric(data) {
  const rows = data.rubric.map((r) => el("tr", {},
    el("td", {}, r.version), el("td", {}, r.rubric), el("td", {}, r.function), el("td", {}, fmt(r.weight)),
    el("td", {}, r.n), el("td", {}, fmt(r.mean)), el("td", {}, r.errors)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no rubric values in this window (needs a store)")));
  document.querySelector("#rubric tbody").replaceChildren(...rows);
}

function drawHeader(data) {
  document.getElementById("serving").textContent = data.serving;
  document.getElementById("canary").textContent = data.canary || "none";
  document.getElementById("canary-share").textContent = data.canary ? `(${pct(data.canary_share)} of new episodes)` : "";
  document.getElementById("confidence").textContent = pct(data.confidence);
  const l = data.ledger;
  const card = (label, value) => el("div", { class: "card" }, el("span", { class: "muted" }, label), el("b", {}, value));
  document.getElementById("ledger").replaceChildren(
    card("recorder queue", l.recorder_pending), card("spool records", l.spool_records),
    card("spool bytes", l.spool_bytes), card("store", l.store_error ? "error" : l.store),
    card("store lag", l.store_lag_s === null ? "–" : fmt(l.store_lag_s, 1) + " s"),
    card("published", l.published === null ? "–" : l.published));
}

function showStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "error" : "muted";
}

async function refresh() {
  try {
    const data = await api("GET", "/admin/dashboard/data");
    data.versions.forEach((v, i) => { colorOf[v.id] = COLORS[i % COLORS.length]; });
    drawHeader(data); drawCharts(data); drawVersions(data); drawDecisions(data); drawRubric(data);
    drawLearner(data); drawEvents("alarms", data.alarms || []); drawEvents("evals", data.evals || []);
    document.body.dataset.updated = String(data.now);
    showStatus("updated " + clock(data.now), false);
  } catch (err) {
    showStatus("refresh failed: " + err.message, true);
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);  // after each answer, so slow replies never pile up
}

loop();

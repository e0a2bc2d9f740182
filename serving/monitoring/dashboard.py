"""The guide's monitoring dashboard: ``GET /monitoring/summary`` (numbers) and ``GET /dashboard`` (a page).

The page is one self-contained HTML document — inline CSS, inline JavaScript, charts drawn as SVG —
so it works on a host with no internet. It fetches the summary every 30 seconds and shows the
guide's panels: health and the loaded model ("not deployed" for a server that never had a version),
latency p50 / p95 / p99, requests per minute, ECE, PSI, mean prediction, 4xx / 5xx, each with a small
chart over the last hour.
"""

from __future__ import annotations

from serving.contract.drift import feature_drift, label_metrics, prediction_drift

REFRESH_SECONDS = 30


CURRENT_MINUTES = 5     # "current" request rate: the last five minutes


def _filled(series: list[dict], since: float, until: float, step: int) -> list[dict]:
    """One point per window over the whole span; windows without traffic count zero requests."""
    by_start = {s["start"]: s for s in series}
    first = int(since // step) * step
    return [by_start.get(t, {"start": t, "requests": 0, "errors_4xx": 0, "errors_5xx": 0, "p95_ms": None,
                             "mean_prediction": None}) for t in range(first, int(until) + 1, step)]


def summary(window: dict, health: dict, references: dict[str, dict], minutes: float, min_rows: int) -> dict:
    """The dashboard's numbers for the default version (every version's in ``versions``)."""
    versions = {}
    step = window["window_seconds"]
    for version, w in (window.get("versions") or {}).items():
        series = _filled(w.get("series") or [], window["since"], window["until"], step)
        recent = [s for s in series if s["start"] >= window["until"] - CURRENT_MINUTES * 60]
        reference = references.get(version) or {}
        features = feature_drift(w, reference, min_rows)
        measured = {n: f["psi"] for n, f in features.items() if f.get("psi") is not None}
        requests = w.get("requests", 0)
        versions[version] = {
            "requests": requests, "average_per_minute": round(requests / minutes, 2) if minutes else None,
            "requests_per_minute": round(sum(s["requests"] for s in recent) / min(CURRENT_MINUTES, minutes), 2),
            "latency_ms": {q: w.get(f"{q}_ms") for q in ("p50", "p95", "p99")},
            "rate_4xx": round(w.get("errors_4xx", 0) / requests, 6) if requests else 0.0,
            "rate_5xx": round(w.get("errors_5xx", 0) / requests, 6) if requests else 0.0,
            "mean_prediction": w.get("mean_prediction"),
            "prediction": prediction_drift(w, reference, min_rows),
            "psi": measured, "psi_max": max(measured.values()) if measured else None,
            "psi_status": "ok" if measured else "not enough data",
            "labels": label_metrics(w.get("labels") or []),
            "series": [{k: s[k] for k in ("start", "requests", "p95_ms", "errors_4xx", "errors_5xx",
                                          "mean_prediction")} for s in series],
        }
    default = health.get("default_version")
    return {"health": health, "deployed": deployed(health), "default_version": default, "minutes": minutes,
            "window": window["window_seconds"], "current": versions.get(default), "versions": versions,
            "refresh_seconds": REFRESH_SECONDS}


def deployed(health: dict) -> bool:
    """Whether this server ever had a version: one is loaded, or a load was tried (it left a warning or an
    event). A server started with nothing, before the first deploy, is "not deployed" rather than down."""
    return bool(health.get("model_loaded") or health.get("loaded_versions") or health.get("warnings")
                or health.get("recent_events"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ML Pipeline Monitoring Dashboard</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; background: #f6f7f9; color: #1d2330; }
 h1 { font-size: 1.3rem; margin: 0 0 1rem; }
 .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }
 .panel { background: #fff; border-radius: 8px; padding: .8rem 1rem; box-shadow: 0 1px 3px #0002; }
 .panel h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .05em; color: #5b6475; margin: 0 0 .4rem; }
 .value { font-size: 1.5rem; font-weight: 600; }
 .ok { color: #1a7f37; } .warn { color: #b35900; } .bad { color: #c62828; } .muted { color: #8a93a3; }
 svg { width: 100%; height: 48px; display: block; margin-top: .4rem; }
 polyline { fill: none; stroke: #3b6ecc; stroke-width: 1.5; }
 #stamp { color: #8a93a3; font-size: .8rem; margin-top: 1rem; }
 #token { display: none; margin-bottom: 1rem; }
</style></head>
<body>
<h1>ML Pipeline Monitoring Dashboard</h1>
<form id="token"><label>Bearer token (reads are protected):
 <input id="token-value" type="password" autocomplete="off"></label> <button>Show</button></form>
<div class="grid">
 <div class="panel"><h2>Health</h2><div class="value" id="health">…</div><div id="model" class="muted"></div></div>
 <div class="panel"><h2>Prediction latency (ms)</h2><div class="value" id="latency">…</div>
  <svg id="chart-latency" viewBox="0 0 100 30" preserveAspectRatio="none"></svg></div>
 <div class="panel"><h2>Requests</h2><div class="value" id="requests">…</div>
  <div id="requests-avg" class="muted"></div>
  <svg id="chart-requests" viewBox="0 0 100 30" preserveAspectRatio="none"></svg></div>
 <div class="panel"><h2>ECE</h2><div class="value" id="ece">…</div><div id="labels" class="muted"></div></div>
 <div class="panel"><h2>PSI (max over features)</h2><div class="value" id="psi">…</div>
  <div id="psi-top" class="muted"></div></div>
 <div class="panel"><h2>Mean prediction</h2><div class="value" id="mean">…</div>
  <svg id="chart-mean" viewBox="0 0 100 30" preserveAspectRatio="none"></svg></div>
 <div class="panel"><h2>Errors</h2><div class="value" id="errors">…</div>
  <svg id="chart-errors" viewBox="0 0 100 30" preserveAspectRatio="none"></svg></div>
</div>
<div id="stamp"></div>
<script>
const REFRESH = __REFRESH__ * 1000;
const ECE_WARN = 0.05, ECE_CRIT = 0.10, PSI_WARN = 0.15, PSI_CRIT = 0.25, P95_WARN = 100, P95_CRIT = 200;
const $ = (id) => document.getElementById(id);
function level(v, warn, crit) { return v == null ? "muted" : v >= crit ? "bad" : v >= warn ? "warn" : "ok"; }
function show(id, text, cls) { const e = $(id); e.textContent = text; e.className = "value " + (cls || ""); }
function fmt(v, d) { return v == null ? "–" : Number(v).toFixed(d); }
function pct(v) { return v == null ? "–" : (100 * v).toFixed(2) + "%"; }
function chart(id, points) {
  const svg = $(id); const ys = points.filter((p) => p != null);
  if (!ys.length) { svg.innerHTML = ""; return; }
  const max = Math.max(...ys) || 1, n = points.length;
  const xy = points.map((p, i) => [n === 1 ? 50 : (100 * i) / (n - 1), 29 - 27 * ((p || 0) / max)]);
  const last = xy[xy.length - 1];
  svg.innerHTML = '<polyline points="' + xy.map((q) => q.join(",")).join(" ") + '"></polyline>' +
    '<circle r="1.5" fill="#3b6ecc" cx="' + last[0] + '" cy="' + last[1] + '"></circle>';
}
async function refresh() {
  const headers = {};
  const token = sessionStorage.getItem("token");
  if (token) headers["Authorization"] = "Bearer " + token;
  let resp;
  try { resp = await fetch("monitoring/summary", { headers }); }
  catch (e) { show("health", "unreachable", "bad"); return; }
  if (resp.status === 401) { $("token").style.display = "block"; return; }
  const s = await resp.json(), h = s.health, c = s.current || {};
  if (s.deployed === false) {
    show("health", "— not deployed", "muted");
    $("model").textContent = "no version deployed to this server yet";
  } else {
    show("health", h.status === "healthy" ? "✓ Healthy" : "✗ " + h.status, h.status === "healthy" ? "ok" : "bad");
    $("model").textContent = h.model_loaded ? "✓ Loaded: version " + h.default_version +
      (h.warnings.length ? " — " + h.warnings.length + " warning(s)" : "") : "no model loaded";
  }
  const lat = c.latency_ms || {};
  show("latency", "P50 " + fmt(lat.p50, 1) + " | P95 " + fmt(lat.p95, 1) + " | P99 " + fmt(lat.p99, 1),
       level(lat.p95, P95_WARN, P95_CRIT));
  show("requests", "Current: " + fmt(c.requests_per_minute, 1) + " req/min");
  const labels = c.labels || {};
  show("ece", labels.n ? fmt(labels.ece, 3) : "no labels", level(labels.n ? labels.ece : null, ECE_WARN, ECE_CRIT));
  $("labels").textContent = labels.n ? labels.n + " labelled rows" + (labels.roc_auc != null ? ", ROC-AUC " +
    fmt(labels.roc_auc, 3) : "") : "labels arrive through POST /feedback";
  show("psi", c.psi_max == null ? "not enough data" : fmt(c.psi_max, 3), level(c.psi_max, PSI_WARN, PSI_CRIT));
  const top = Object.entries(c.psi || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
  $("psi-top").textContent = top.map(([k, v]) => k + " " + fmt(v, 3)).join(", ");
  $("requests-avg").textContent = "average over the last " + s.minutes + " min: " + fmt(c.average_per_minute, 1);
  show("mean", fmt(c.mean_prediction, 3));
  show("errors", "4xx " + pct(c.rate_4xx) + " | 5xx " + pct(c.rate_5xx), c.rate_5xx > 0.001 ? "bad" : c.rate_4xx +
    c.rate_5xx > 0.005 ? "warn" : "ok");
  const series = c.series || [];
  chart("chart-latency", series.map((p) => p.p95_ms));
  chart("chart-requests", series.map((p) => p.requests));
  chart("chart-mean", series.map((p) => p.mean_prediction));
  chart("chart-errors", series.map((p) => p.errors_4xx + p.errors_5xx));
  $("stamp").textContent = "last " + s.minutes + " min, per " + s.window + " s; updated " +
    new Date().toLocaleTimeString() + ", every " + (REFRESH / 1000) + " s";
  document.body.dataset.loaded = "yes";
}
$("token").addEventListener("submit", (e) => { e.preventDefault();
  sessionStorage.setItem("token", $("token-value").value); $("token").style.display = "none"; refresh(); });
refresh();
setInterval(refresh, REFRESH);
</script>
</body></html>
""".replace("__REFRESH__", str(REFRESH_SECONDS))

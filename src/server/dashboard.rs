//! The `/dashboard` page: live charts drawn from `/api/metrics`, no external assets.

/// The page. It polls `/api/metrics` every 2 s and draws four charts on canvases:
/// latency percentiles per layer, cache hit rates, AI cost per agent, and throughput
/// per window. When a draw had data it sets `data-rendered="yes"` and
/// `data-points="N"` on `<body>` (what the browser test checks).
pub(crate) const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kasama dashboard</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 24px; background: #fafafa; color: #222; }
  h1 { font-size: 20px; }
  .grid { display: grid; grid-template-columns: repeat(2, 480px); gap: 16px; }
  figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 8px; }
  figcaption { font-size: 13px; color: #555; margin-bottom: 4px; }
  #status { font-size: 12px; color: #777; }
</style>
</head>
<body data-rendered="no" data-points="0">
<h1>kasama — live metrics</h1>
<p id="status">loading…</p>
<div class="grid">
  <figure><figcaption>Latency (ms): p50 / p95 / p99</figcaption><canvas id="latency" width="460" height="220"></canvas></figure>
  <figure><figcaption>Cache hit rate</figcaption><canvas id="hits" width="460" height="220"></canvas></figure>
  <figure><figcaption>AI cost per agent (µ$)</figcaption><canvas id="cost" width="460" height="220"></canvas></figure>
  <figure><figcaption>Throughput (requests/s)</figcaption><canvas id="rps" width="460" height="220"></canvas></figure>
</div>
<script>
const colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"];
function bars(id, labels, series, names, fixedMax) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = fixedMax || Math.max(1e-9, ...series.flat());
  const groupW = (c.width - 40) / Math.max(1, labels.length), barW = groupW / (series.length + 1);
  let drawn = 0;
  labels.forEach((label, i) => {
    series.forEach((s, k) => {
      const h = (s[i] / max) * (c.height - 50);
      g.fillStyle = colors[k % colors.length];
      g.fillRect(30 + i * groupW + k * barW, c.height - 30 - h, barW - 2, h);
      if (s[i] > 0) drawn++;
    });
    g.fillStyle = "#333"; g.font = "11px sans-serif";
    g.fillText(label, 30 + i * groupW, c.height - 14);
  });
  names.forEach((n, k) => { g.fillStyle = colors[k % colors.length]; g.fillText(n, 34 + k * 60, 12); });
  return drawn;
}
async function refresh() {
  try {
    const m = await (await fetch("/api/metrics")).json();
    let points = 0;
    const layers = [["api", m.api], ["ai", m.ai], ["db", m.db], ["realtime", m.realtime]];
    points += bars("latency", layers.map(l => l[0]),
      [layers.map(l => l[1].p50_ms), layers.map(l => l[1].p95_ms), layers.map(l => l[1].p99_ms)], ["p50", "p95", "p99"]);
    const caches = [m.ai_cache].concat(m.caches);
    points += bars("hits", caches.map(c => c.tier + " " + Math.round(100 * c.hit_rate) + " %"), [caches.map(c => c.hit_rate)], ["hit rate (0–100 %)"], 1);
    points += bars("cost", m.ai_agents.map(a => a.agent.split("_")[0]), [m.ai_agents.map(a => a.cost_nanos / 1000)], ["cost"]);
    points += bars("rps", m.windows.map(w => w.window),
      [m.windows.map(w => w.api_rps), m.windows.map(w => w.ai_rps), m.windows.map(w => w.db_rps)], ["api", "ai", "db"]);
    document.body.dataset.points = String(points);
    if (points > 0) document.body.dataset.rendered = "yes";
    document.getElementById("status").textContent =
      "updated " + new Date().toLocaleTimeString() + " · " + m.api.count + " API requests, " + m.ai.count + " AI requests";
  } catch (e) {
    document.getElementById("status").textContent = "metrics unavailable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;

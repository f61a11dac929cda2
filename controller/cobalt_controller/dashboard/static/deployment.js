// One deployment: its facts, its metrics, its replicas and its event log (newest first), kept live.
import { routeList, replicaCount } from "./deployments.js";
import {
  ACCRUE_MS, EMULATED, api, authTag, badge, duration, esc, live, num, throttled, usd, when,
} from "./util.js";

function summary(d, leftOut) {
  const scaling = d.autoscaling
    ? `${num(d.autoscaling.min_replicas)} to ${num(d.autoscaling.max_replicas)} replicas`
    : "";
  const error = d.error
    ? `<section class="panel"><h2>Error</h2><pre class="log error" id="deployment-error">${esc(d.error)}</pre></section>`
    : "";
  return `<p class="crumbs"><a href="/deployments">Deployments</a> /</p>
<h1>${esc(d.name)} ${badge(d.status)} ${authTag(d.auth)}</h1>
<dl class="facts">
<div><dt>Replicas ready / wanted</dt><dd id="deployment-replicas">${replicaCount(d)}</dd></div>
<div><dt>Cost so far</dt><dd id="deployment-cost" data-usd="${d.cost_usd}">${usd(d.cost_usd)}${d.emulated ? " " + EMULATED : ""}</dd></div>
<div><dt>Version</dt><dd>v${d.version}</dd></div>
<div><dt>Created</dt><dd>${esc(when(d.created_at))}</dd></div>
</dl>
<section class="panel"><dl class="kv">
<div><dt>URL</dt><dd class="mono" id="deployment-url">${esc(d.url) || '<span class="muted">the gateway is not running</span>'}</dd></div>
<div><dt>Routes</dt><dd>${routeList(d.routes)}</dd></div>
<div><dt>Hardware per replica</dt><dd>${esc(d.hardware)}</dd></div>
${d.executor ? `<div><dt>Executor</dt><dd>${esc(d.executor)}</dd></div>` : ""}
${scaling ? `<div><dt>Autoscaling</dt><dd>${esc(scaling)}</dd></div>` : ""}
<div><dt>Updated</dt><dd>${esc(when(d.updated_at))}</dd></div>
</dl></section>
${error}
${leftOut ? `<p class="muted">${num(leftOut)} earlier ended replicas are not listed.</p>` : ""}`;
}

function seconds(value) {
  if (value == null) return "–";
  if (value < 1) return `${Number((value * 1000).toPrecision(3))} ms`;
  return `${Number(value.toPrecision(3))} s`;
}

function rate(value) {
  if (value == null) return "–";
  return value >= 100 ? num(Math.round(value)) : String(Number(value.toPrecision(3)));
}

function sizes(counts, unit) {
  return Object.entries(counts)
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([size, n]) => `${esc(size)}: ${num(n)} ${unit}`)
    .join(", ");
}

// What the replicas' models counted: latencies, throughput, batch sizes, cost per unit.
function metricsPanel(m) {
  const tokens = m.models.length > 0 || m.generated_tokens > 0 || m.prompt_tokens > 0;
  const fact = (id, label, value) => `<div><dt>${label}</dt><dd id="${id}">${value}</dd></div>`;
  const facts = [fact("metrics-requests", "Requests", num(m.requests))];
  if (tokens) {
    facts.push(
      fact("metrics-ttft", "Time to first token p50 / p99",
        `${seconds(m.time_to_first_token_p50)} / ${seconds(m.time_to_first_token_p99)}`),
      fact("metrics-inter-token", "Inter-token p50 / p99",
        `${seconds(m.inter_token_p50)} / ${seconds(m.inter_token_p99)}`),
      fact("metrics-tps", `Tokens / s (last ${m.window_s} s)`, rate(m.tokens_per_second)),
    );
  }
  facts.push(fact("metrics-cost-requests", "Cost / 1,000 requests",
    m.cost_per_1k_requests == null ? "–" : usd(m.cost_per_1k_requests)));
  if (tokens) {
    facts.push(fact("metrics-cost-tokens", "Cost / million tokens",
      m.cost_per_million_tokens == null ? "–" : usd(m.cost_per_million_tokens)));
  }
  const rows = [];
  if (tokens) {
    const cached = m.cached_prompt_tokens ? ` (${num(m.cached_prompt_tokens)} cached)` : "";
    rows.push(["Tokens", `${num(m.generated_tokens)} generated, ${num(m.prompt_tokens)} prompt${cached}`]);
    if (m.tokens_per_busy_second != null) rows.push(["Tokens per busy second", rate(m.tokens_per_busy_second)]);
  }
  if (Object.keys(m.batch_sizes).length) rows.push(["Batch sizes", sizes(m.batch_sizes, "steps")]);
  for (const [path, counts] of Object.entries(m.endpoint_batch_sizes)) {
    rows.push([`Batches of <code>${esc(path)}</code>`, sizes(counts, "calls")]);
  }
  if (m.models.length) rows.push(["Models", m.models.map(esc).join(", ")]);
  for (const error of m.errors) rows.push(["Metrics failed", esc(error)]);
  const kv = rows.length
    ? `<dl class="kv">${rows.map(([k, v]) => `<div><dt>${k}</dt><dd>${v}</dd></div>`).join("")}</dl>`
    : "";
  return `<dl class="facts">${facts.join("")}</dl>${kv}`;
}

function replicaRow(r) {
  const error = r.error ? `<div class="muted reason" title="${esc(r.error)}">${esc(r.error.split("\n")[0])}</div>` : "";
  return `<tr data-id="${esc(r.id)}" class="row-${esc(r.status)}">
<td class="mono">${esc(r.id)} <span class="muted">v${r.version}</span></td>
<td>${badge(r.status.toUpperCase())}${error}</td>
<td>${esc(r.executor)}</td>
<td>${esc(r.given)}</td>
<td class="num">${esc(when(r.started_at))}</td>
<td class="num">${r.ready_after_s == null ? "" : `after ${esc(duration(r.ready_after_s))}`}</td>
<td class="num">${r.in_flight == null ? "" : num(r.in_flight)}</td>
<td class="mono url">${esc(r.url)}</td>
</tr>`;
}

function eventRow(e) {
  const inputs = e.inputs == null
    ? ""
    : `<details><summary>inputs</summary><pre class="inputs">${esc(typeof e.inputs === "string" ? e.inputs : JSON.stringify(e.inputs, null, 2))}</pre></details>`;
  return `<tr data-kind="${esc(e.kind)}">
<td class="num">${esc(when(e.time))}</td>
<td><code>${esc(e.kind)}</code></td>
<td class="message"><span>${esc(e.message)}</span>${inputs}</td>
</tr>`;
}

export async function renderDeployment(main, name) {
  const path = `/api/deployments/${encodeURIComponent(name)}`;
  const data = await api(path);
  document.title = `${data.deployment.name} · deployment · cobalt`;
  main.innerHTML = `<section id="summary"></section>
<section class="panel" id="metrics-panel" hidden><h2>Metrics <span class="muted">all replicas, ended ones included</span></h2>
<div id="metrics"></div></section>
<section class="panel"><h2>Replicas</h2>
<table class="grid" id="replicas">
<thead><tr><th>Replica</th><th>Status</th><th>Executor</th><th>Hardware given</th><th class="num">Started</th><th class="num">Ready</th><th class="num">In flight</th><th>URL</th></tr></thead>
<tbody></tbody></table>
<p class="muted" id="no-replicas" hidden>No replicas: it has scaled to zero, or it was torn down.</p></section>
<section class="panel"><h2>Events <span class="muted">newest first</span></h2>
<table class="grid" id="events">
<thead><tr><th class="num">Time</th><th>Kind</th><th>Message</th></tr></thead>
<tbody></tbody></table></section>`;
  const replicas = main.querySelector("#replicas tbody");
  const events = main.querySelector("#events tbody");

  function draw(fresh) {
    main.querySelector("#summary").innerHTML = summary(fresh.deployment, fresh.ended_replicas_left_out);
    main.querySelector("#metrics-panel").hidden = fresh.metrics == null;
    if (fresh.metrics != null) main.querySelector("#metrics").innerHTML = metricsPanel(fresh.metrics);
    replicas.innerHTML = fresh.replicas.map(replicaRow).join("");
    main.querySelector("#no-replicas").hidden = fresh.replicas.length > 0;
    // Keep the inputs a reader opened open across a redraw.
    const open = new Set([...events.querySelectorAll("details[open]")].map((el) => el.closest("tr").rowIndex));
    const shift = fresh.events.length - events.rows.length;
    events.innerHTML = fresh.events.map(eventRow).join("");
    for (const index of open) {
      const details = main.querySelector("#events").rows[index + shift]?.querySelector("details");
      if (details) details.open = true;
    }
    document.body.dataset.rendered = "1";
  }
  draw(data);

  const reread = throttled(async () => draw(await api(path)));
  live(name, data.as_of, reread, reread, "deployment");
  setInterval(() => {
    if (!document.hidden) reread();
  }, ACCRUE_MS);
}

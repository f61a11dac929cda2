// The deployments page: status, replicas, auth, routes, version, cost and URL, kept live.
import { EMULATED, ACCRUE_MS, api, authTag, badge, esc, live, throttled, usd, when } from "./util.js";

export function routeList(routes) {
  return routes
    .map((r) => `<code>${esc(r.path)}</code>${r.streaming ? ' <span class="muted">(stream)</span>' : ""}`)
    .join(", ");
}

export function replicaCount(d) {
  const short = d.ready < d.desired ? " short" : "";
  return `<span class="replicas${short}" title="${d.ready} ready of ${d.desired} wanted">${d.ready}/${d.desired}</span>`;
}

function row(d) {
  return `<tr data-name="${esc(d.name)}">
<td class="name"><a href="/deployments/${encodeURIComponent(d.name)}">${esc(d.name)}</a></td>
<td>${badge(d.status)}</td>
<td class="num">${replicaCount(d)}</td>
<td class="auth">${authTag(d.auth)}</td>
<td class="routes">${routeList(d.routes)}</td>
<td class="num">v${d.version}</td>
<td class="num cost" data-usd="${d.cost_usd}">${usd(d.cost_usd)}${d.emulated ? " " + EMULATED : ""}</td>
<td class="mono url">${esc(d.url)}</td>
<td>${esc(when(d.created_at))}</td>
</tr>`;
}

export async function renderDeployments(main) {
  document.title = "Deployments · cobalt";
  const all = new URLSearchParams(location.search).get("all") === "1";
  const path = `/api/deployments${all ? "?all=1" : ""}`;
  const data = await api(path);
  const toggle = all
    ? '<a href="/deployments">Hide torn-down deployments</a>'
    : '<a href="/deployments?all=1">Show torn-down deployments too</a>';
  main.innerHTML = `<h1>Deployments</h1>
<p class="ranges">${toggle}</p>
<table class="grid" id="deployments">
<thead><tr><th>Name</th><th>Status</th><th class="num">Replicas</th><th>Auth</th><th>Routes</th><th class="num">Version</th><th class="num">Cost so far</th><th>URL</th><th>Created</th></tr></thead>
<tbody></tbody></table>
<p class="muted empty" hidden>No deployments${all ? "" : " running"}. <code>ct.deploy(service)(...)</code> starts one.</p>`;
  const body = main.querySelector("tbody");

  function draw(fresh) {
    body.innerHTML = fresh.deployments.map(row).join("");
    main.querySelector(".empty").hidden = fresh.deployments.length > 0;
    document.body.dataset.rendered = "1";
  }
  draw(data);

  // Deployments change rarely: a change reads the list again. Costs accrue
  // between changes, so an open tab also reads it every few seconds.
  const reread = throttled(async () => draw(await api(path)));
  live("", data.as_of, reread, reread, "deployment");
  setInterval(() => {
    if (!document.hidden) reread();
  }, ACCRUE_MS);
}

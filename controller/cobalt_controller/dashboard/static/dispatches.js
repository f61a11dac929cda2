// The dispatches page: status, duration, cost and tasks by status, kept live.
import { EMULATED, api, badge, clock, countPills, duration, esc, live, num, usd, when } from "./util.js";

const ENDED = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "BUDGET_EXCEEDED"]);

function row(d, now) {
  const dur = d.started_at == null ? null : (d.ended_at ?? now) - d.started_at;
  const budget = d.budget_usd != null ? `<span class="muted"> of ${usd(d.budget_usd)}</span>` : "";
  const sub = d.parent
    ? ` <span class="tag" title="A sublattice of ${esc(d.parent)}: its cost is already included in that dispatch's">sublattice</span>`
    : "";
  return `<tr data-id="${esc(d.id)}">
<td class="name"><a href="/dispatches/${encodeURIComponent(d.id)}">${esc(d.name)}</a>${sub}<div class="muted mono">${esc(d.id)}</div></td>
<td>${badge(d.status)}</td>
<td>${esc(when(d.created_at))}</td>
<td class="num dur" data-started="${d.started_at ?? ""}" data-running="${ENDED.has(d.status) ? "" : "1"}">${esc(duration(dur))}</td>
<td class="num cost" data-usd="${d.cost_usd}">${usd(d.cost_usd)}${budget}${d.emulated ? " " + EMULATED : ""}</td>
<td class="counts">${num(d.tasks)} <span class="muted">tasks</span> ${countPills(d.counts)}</td>
</tr>`;
}

export async function renderDispatches(main) {
  document.title = "Dispatches · cobalt";
  const data = await api("/api/dispatches?limit=200");
  const byId = new Map(data.dispatches.map((d) => [d.id, d]));
  let now = clock(data.as_of);
  main.innerHTML = `<h1>Dispatches</h1>
<table class="grid" id="dispatches">
<thead><tr><th>Name</th><th>Status</th><th>Created</th><th class="num">Duration</th><th class="num">Cost</th><th>Tasks by status</th></tr></thead>
<tbody></tbody></table>
<p class="muted empty" ${data.dispatches.length ? "hidden" : ""}>No dispatches yet. <code>ct.dispatch(workflow)(...)</code> sends one here.</p>`;
  const body = main.querySelector("tbody");

  function draw() {
    const t = now();
    const rows = [...byId.values()].sort((a, b) => b.created_at - a.created_at);
    body.innerHTML = rows.map((d) => row(d, t)).join("");
    main.querySelector(".empty").hidden = rows.length > 0;
  }
  draw();

  live(
    null,
    data.as_of,
    (msg) => {
      if (msg.type !== "dispatches") return;
      for (const d of msg.dispatches) byId.set(d.id, d);
      draw();
    },
    async () => {
      const fresh = await api("/api/dispatches?limit=200");
      now = clock(fresh.as_of);
      for (const d of fresh.dispatches) byId.set(d.id, d);
      draw();
    },
  );

  setInterval(() => {
    const t = now();
    for (const cell of body.querySelectorAll('td.dur[data-running="1"]')) {
      if (cell.dataset.started) cell.textContent = duration(t - Number(cell.dataset.started));
    }
  }, 1000);
}

// Cost: totals by day, by executor and by GPU type.
import { EMULATED, api, duration, esc, live, num, usd } from "./util.js";

const RANGES = [
  [7, "7 days"],
  [30, "30 days"],
  [90, "90 days"],
  [365, "a year"],
  [0, "all time"],
];

function table(id, title, rows, label, max) {
  const body = rows
    .map((r) => {
      const width = max > 0 ? Math.max(0.5, (100 * r.cost_usd) / max) : 0;
      return `<tr><td>${label(r)}</td>
<td class="num">${num(r.tasks)}</td>
<td class="num">${esc(duration(r.billed_s))}</td>
<td class="num cost" data-usd="${r.cost_usd}">${usd(r.cost_usd)}${r.emulated ? " " + EMULATED : ""}</td>
<td class="barcell"><progress max="${max || 1}" value="${r.cost_usd}" title="${width.toFixed(0)}% of the largest"></progress></td></tr>`;
    })
    .join("");
  return `<section class="panel"><h2>${title}</h2><table class="grid" id="${id}">
<thead><tr><th></th><th class="num">Tasks</th><th class="num">Billed</th><th class="num">Cost</th><th></th></tr></thead>
<tbody>${body || '<tr><td colspan="5" class="muted">No finished tasks in this range.</td></tr>'}</tbody></table></section>`;
}

function draw(main, data, days) {
  const max = (rows) => rows.reduce((m, r) => Math.max(m, r.cost_usd), 0);
  const t = data.total;
  const picker = RANGES.map(
    ([n, label]) => `<a href="/cost?days=${n}" class="${n === days ? "current" : ""}">${label}</a>`,
  ).join(" ");
  main.innerHTML = `<h1>Cost</h1>
<p class="ranges">${picker}</p>
<dl class="facts">
<div><dt>Total${data.since ? ` since ${esc(data.since)}` : ""}</dt><dd id="cost-total" data-usd="${t.cost_usd}">${usd(t.cost_usd)}${t.emulated ? " " + EMULATED : ""}</dd></div>
<div><dt>Tasks</dt><dd>${num(t.tasks)}</dd></div>
<div><dt>Billed</dt><dd>${esc(duration(t.billed_s)) || "0 s"}</dd></div>
</dl>
${table("by-day", "By day", data.by_day, (r) => esc(r.day), max(data.by_day))}
${table("by-executor", "By executor", data.by_executor, (r) => esc(r.executor || "(none)"), max(data.by_executor))}
${table("by-gpu", "By GPU type", data.by_gpu, (r) => esc(r.label), max(data.by_gpu))}`;
}

export async function renderCost(main) {
  document.title = "Cost · cobalt";
  const params = new URLSearchParams(location.search);
  const days = Number(params.get("days") ?? 30);
  const data = await api(`/api/cost?days=${days}`);
  draw(main, data, days);
  // Costs are recorded as tasks end: read the totals again, at most every two seconds.
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      draw(main, await api(`/api/cost?days=${days}`), days);
    }, 2000);
  };
  live(null, data.as_of, refresh, refresh);
}

// One dispatch: its graph, its task table (sortable by cost) and each task's logs.
import { Graph } from "./graph.js";
import {
  EMULATED, api, badge, clock, countPills, duration, esc, live, num, statusLabel, usd, when,
} from "./util.js";

const COLUMNS = [
  { key: "name", title: "Name" },
  { key: "status", title: "Status" },
  { key: "executor", title: "Executor" },
  { key: "requested", title: "Hardware requested" },
  { key: "given", title: "Hardware given" },
  { key: "started_at", title: "Start", num: true },
  { key: "duration_s", title: "Duration", num: true },
  { key: "cost_usd", title: "Cost", num: true },
];
// The table draws only the rows in view (and a few around them), so a
// 100,000-task dispatch scrolls as easily as a 10-task one.
const ROW_H = 30;
const BUFFER = 15;
const ENDED = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "BUDGET_EXCEEDED", "SKIPPED"]);

function costCell(value, emulated) {
  return `${usd(value)}${emulated ? " " + EMULATED : ""}`;
}

/** "2.1 s (billed 3 s)": billing counts every started second of every attempt. */
function durationCell(t) {
  const running = t.started_at != null && t.ended_at == null;
  const took = `<span class="took"${running ? ` data-started="${t.started_at}"` : ""}>${esc(duration(t.duration_s))}</span>`;
  const billed = t.billed_s ? ` <span class="muted billed">(billed ${esc(duration(t.billed_s))})</span>` : "";
  return `<td class="num dur">${took}${billed}</td>`;
}

function taskRow(t) {
  const child = t.child
    ? `<a class="tag" href="/dispatches/${encodeURIComponent(t.child)}" title="This sublattice's own dispatch">sublattice ↗</a> `
    : "";
  return `<tr data-id="${t.id}" class="row-${esc(t.status)}">
<td class="name">${child}<a href="#task-${t.id}" class="task-link">${esc(t.name)}</a> <span class="muted">#${t.id}</span></td>
<td>${badge(t.status)}${t.reason ? ` <span class="muted">${esc(t.reason)}</span>` : ""}</td>
<td>${esc(t.executor)}</td>
<td>${esc(t.requested)}</td>
<td>${esc(t.given)}</td>
<td class="num">${esc(when(t.started_at))}</td>
${durationCell(t)}
<td class="num cost" data-usd="${t.cost_usd}">${costCell(t.cost_usd, t.emulated)}</td>
</tr>`;
}

function compare(key, num, dir) {
  return (a, b) => {
    const x = a[key];
    const y = b[key];
    if (x == null || x === "") return y == null || y === "" ? a.id - b.id : 1;
    if (y == null || y === "") return -1;
    if (x === y) return a.id - b.id;
    return (num ? x - y : x < y ? -1 : 1) * dir;
  };
}

class DispatchView {
  constructor(main, id, data) {
    this.main = main;
    this.id = id;
    this.sort = { key: null, dir: 1 };
    this.filter = { text: "", status: null, members: null, label: "" };
    this.rows = [];
    this.window = [0, 0];
    this.detailId = null;
    this.load(data);
    this.skeleton();
    this.drawSummary();
    this.graph = new Graph(this.$("#graph"), data.graph, this.byId, (node) => this.pick(node));
    this.drawTable();

    requestAnimationFrame(() =>
      setTimeout(() => {
        performance.mark("cobalt:rendered");
        document.body.dataset.rendered = "1";
      }, 0),
    );
    this.source = live(id, data.as_of, (msg) => this.apply(msg), () => this.resync());
    window.addEventListener("hashchange", () => this.openFromHash());
    this.openFromHash();
    setInterval(() => this.tick(), 1000);
  }

  $(selector) {
    return this.main.querySelector(selector);
  }

  load(data) {
    this.dispatch = data.dispatch;
    this.tasks = data.tasks;
    this.byId = new Map(this.tasks.map((t) => [t.id, t]));
    this.now = clock(data.as_of);
  }

  skeleton() {
    document.title = `${this.dispatch.name} · cobalt`;
    const heads = COLUMNS.map(
      (c) => `<th data-key="${c.key}" class="sortable${c.num ? " num" : ""}" tabindex="0">${esc(c.title)}<span class="arrow"></span></th>`,
    ).join("");
    this.main.innerHTML = `<section id="summary"></section>
<section class="panel"><h2>Graph</h2><div id="graph" class="graph-wrap"></div></section>
<section class="panel"><h2>Tasks</h2>
<div class="toolbar"><input id="filter" type="search" placeholder="Filter by name, executor or hardware" aria-label="Filter tasks">
<span id="chip"></span><span id="shown" class="muted"></span></div>
<div id="table-scroll" class="table-scroll"><table class="grid tasks" id="tasks">
<colgroup>${COLUMNS.map((c) => `<col class="c-${c.key}">`).join("")}</colgroup>
<thead><tr>${heads}</tr></thead><tbody></tbody>
<tfoot><tr><td colspan="7" id="tasks-total-label">Total</td><td class="num" id="tasks-cost"></td></tr></tfoot></table></div>
</section>
<aside id="detail" class="detail" hidden></aside>`;
    this.body = this.$("#tasks tbody");
    this.$("#tasks thead").addEventListener("click", (e) => this.sortBy(e.target.closest("th")));
    this.$("#tasks thead").addEventListener("keydown", (e) => {
      if (e.key === "Enter") this.sortBy(e.target.closest("th"));
    });
    this.$("#filter").addEventListener("input", (e) => {
      this.filter.text = e.target.value.trim().toLowerCase();
      this.drawTable();
    });
    this.scroller = this.$("#table-scroll");
    let queued = false;
    this.scroller.addEventListener("scroll", () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        this.drawRows(false);
      });
    });
    this.$("#chip").addEventListener("click", (e) => {
      if (e.target.closest("button")) this.setFilter(null, null, "");
    });
    this.$("#summary").addEventListener("click", (e) => {
      const pill = e.target.closest(".pill");
      if (pill) this.setFilter(pill.dataset.status, null, statusLabel(pill.dataset.status));
    });
  }

  drawSummary() {
    const d = this.dispatch;
    const dur = d.started_at == null ? null : (d.ended_at ?? this.now()) - d.started_at;
    const parent = d.parent
      ? ` <a class="tag" href="/dispatches/${encodeURIComponent(d.parent)}">sublattice of ${esc(d.parent.slice(0, 8))}…</a>`
      : "";
    const budget = d.budget_usd != null ? ` <span class="muted">of ${usd(d.budget_usd)} budget</span>` : "";
    this.$("#summary").innerHTML = `<p class="crumbs"><a href="/">Dispatches</a> /</p>
<h1>${esc(d.name)} ${badge(d.status)}${parent}</h1>
<dl class="facts">
<div><dt>Cost</dt><dd id="dispatch-cost" data-usd="${d.cost_usd}">${costCell(d.cost_usd, d.emulated)}${budget}</dd></div>
<div><dt>Duration</dt><dd id="dispatch-duration">${esc(duration(dur))}</dd></div>
<div><dt>Started</dt><dd>${esc(when(d.started_at ?? d.created_at))}</dd></div>
<div><dt>Tasks</dt><dd>${num(d.tasks)} ${countPills(d.counts)}</dd></div>
<div><dt>Id</dt><dd class="mono">${esc(d.id)}</dd></div>
</dl>${d.error ? `<pre class="log error">${esc(d.error)}</pre>` : ""}`;
  }

  visible() {
    const { text, status, members } = this.filter;
    let rows = this.tasks;
    if (status || members || text) {
      rows = rows.filter(
        (t) =>
          (!status || t.status === status) &&
          (!members || members.has(t.id)) &&
          (!text || `${t.name} ${t.executor} ${t.requested} ${t.given}`.toLowerCase().includes(text)),
      );
    }
    if (this.sort.key) {
      const column = COLUMNS.find((c) => c.key === this.sort.key);
      rows = [...rows].sort(compare(column.key, column.num, this.sort.dir));
    }
    return rows;
  }

  drawTable() {
    this.rows = this.visible();
    this.drawRows(true);
    this.drawTotal(this.rows);
    for (const th of this.$("#tasks thead").querySelectorAll("th")) {
      const on = th.dataset.key === this.sort.key;
      th.setAttribute("aria-sort", on ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
      th.querySelector(".arrow").textContent = on ? (this.sort.dir > 0 ? " ▲" : " ▼") : "";
    }
  }

  /** Draws the rows in view; `force` redraws them even if the window did not move. */
  drawRows(force) {
    const rows = this.rows;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW_H) - BUFFER);
    const last = Math.min(rows.length, first + Math.ceil(height / ROW_H) + 2 * BUFFER);
    if (!force && first === this.window[0] && last === this.window[1]) return;
    this.window = [first, last];
    this.body.innerHTML = `<tr class="spacer"></tr>${rows.slice(first, last).map(taskRow).join("")}<tr class="spacer"></tr>`;
    const [top, bottom] = [this.body.firstElementChild, this.body.lastElementChild];
    top.style.height = `${first * ROW_H}px`;
    bottom.style.height = `${(rows.length - last) * ROW_H}px`;
    this.rowEls = new Map();
    for (const tr of this.body.rows) if (tr.dataset.id) this.rowEls.set(Number(tr.dataset.id), tr);
  }

  drawTotal(rows = this.rows) {
    const total = rows.reduce((sum, t) => sum + (t.cost_usd || 0), 0);
    const emulated = rows.some((t) => t.emulated);
    const cell = this.$("#tasks-cost");
    cell.dataset.usd = String(total);
    cell.innerHTML = costCell(total, emulated);
    const n = rows.length;
    this.$("#tasks-total-label").textContent = `Total of ${num(n)} task${n === 1 ? "" : "s"}`;
    this.$("#shown").textContent = `${num(n)} of ${num(this.tasks.length)} tasks`;
  }

  sortBy(th) {
    if (!th || !th.dataset.key) return;
    const column = COLUMNS.find((c) => c.key === th.dataset.key);
    if (this.sort.key === column.key) this.sort.dir = -this.sort.dir;
    else this.sort = { key: column.key, dir: column.num ? -1 : 1 };
    this.drawTable();
  }

  setFilter(status, members, label) {
    this.filter.status = status;
    this.filter.members = members;
    this.filter.label = label;
    this.$("#chip").innerHTML = label
      ? `<span class="chip">${esc(label)} <button type="button" aria-label="Show all tasks">×</button></span>`
      : "";
    this.drawTable();
  }

  pick(node) {
    if (node.count === 1) {
      location.hash = `task-${node.members[0][0]}`;
    } else {
      this.setFilter(null, Graph.members(node), node.label);
      this.scroller.scrollTop = 0;
      this.$("#tasks").scrollIntoView({ block: "nearest" });
    }
  }

  apply(msg) {
    if (msg.type !== "dispatch") return;
    this.dispatch = msg.dispatch;
    this.drawSummary();
    if (!msg.tasks.length) return;
    const ids = [];
    let added = false;
    for (const t of msg.tasks) {
      const old = this.byId.get(t.id);
      if (old) Object.assign(old, t);
      else {
        this.tasks.push(t);
        this.byId.set(t.id, t);
        added = true;
      }
      ids.push(t.id);
    }
    this.graph.update(ids);
    if (added || this.sort.key || this.filter.status || this.filter.text) {
      this.drawTable();
    } else {
      const changed = ids.filter((id) => this.rowEls.has(id));
      const holder = document.createElement("tbody");
      holder.innerHTML = changed.map((id) => taskRow(this.byId.get(id))).join("");
      for (const tr of [...holder.rows]) {
        const id = Number(tr.dataset.id);
        this.rowEls.get(id).replaceWith(tr);
        this.rowEls.set(id, tr);
      }
      this.drawTotal();
    }
    if (this.detailId != null && ids.includes(this.detailId)) this.openTask(this.detailId);
  }

  async resync() {
    const data = await api(`/api/dispatches/${encodeURIComponent(this.id)}`);
    this.load(data);
    this.graph.tasks = this.byId;
    this.graph.draw();
    this.drawSummary();
    this.drawTable();
  }

  tick() {
    const now = this.now();
    const d = this.dispatch;
    if (d.started_at != null && d.ended_at == null) {
      this.$("#dispatch-duration").textContent = duration(now - d.started_at);
    }
    for (const cell of this.body.querySelectorAll("td.dur .took[data-started]")) {
      cell.textContent = duration(now - Number(cell.dataset.started));
    }
  }

  openFromHash() {
    const m = location.hash.match(/^#task-(\d+)$/);
    if (m) this.openTask(Number(m[1]));
    else this.closeTask(false);
  }

  async openTask(id) {
    this.detailId = id;
    const panel = this.$("#detail");
    panel.hidden = false;
    if (!panel.dataset.id || Number(panel.dataset.id) !== id) {
      panel.innerHTML = `<p class="muted">Loading task ${id}…</p>`;
    }
    panel.dataset.id = String(id);
    let t;
    try {
      t = await api(`/api/dispatches/${encodeURIComponent(this.id)}/tasks/${id}`);
    } catch (err) {
      panel.innerHTML = `<button type="button" class="close" aria-label="Close">×</button><p>${esc(err.message)}</p>`;
      panel.querySelector(".close").onclick = () => this.closeTask(true);
      return;
    }
    if (this.detailId !== id) return;
    const fact = (k, v) => (v === "" || v == null ? "" : `<div><dt>${k}</dt><dd>${v}</dd></div>`);
    const billing = t.billed_s
      ? `${esc(duration(t.billed_s))} billed at ${usd(t.rate_usd_per_hour)}/h`
      : "";
    const logs = (title, text, cls) =>
      `<h3>${title}</h3>${text ? `<pre class="log ${cls}" id="detail-${cls}">${esc(text)}</pre>` : `<p class="muted" id="detail-${cls}">empty</p>`}`;
    panel.innerHTML = `<header><h2>${esc(t.name)} <span class="muted">#${t.id}</span></h2>
<button type="button" class="close" aria-label="Close">×</button></header>
<dl class="kv">
${fact("Status", badge(t.status) + (t.reason ? ` <span class="muted">${esc(t.reason)}</span>` : ""))}
${fact("Executor", esc(t.executor))}
${fact("Hardware requested", esc(t.requested))}
${fact("Hardware given", esc(t.given))}
${fact("Start", esc(when(t.started_at)))}
${fact("End", esc(when(t.ended_at)))}
${fact("Duration", esc(duration(t.duration_s)))}
${fact("Attempts", t.attempts ? String(t.attempts) : "")}
${fact("Cost", costCell(t.cost_usd, t.emulated) + (billing ? ` <span class="muted">(${billing})</span>` : ""))}
${fact("Placement", esc(t.placement))}
${fact("Sublattice", t.child ? `<a href="/dispatches/${encodeURIComponent(t.child)}">${esc(t.child)}</a>` : "")}
</dl>
${t.error ? logs("Error", t.error, "error") : ""}
${logs("stdout", t.stdout, "stdout")}
${logs("stderr", t.stderr, "stderr")}`;
    panel.querySelector(".close").onclick = () => this.closeTask(true);
  }

  closeTask(clearHash) {
    this.detailId = null;
    const panel = this.$("#detail");
    panel.hidden = true;
    panel.dataset.id = "";
    if (clearHash && location.hash) history.replaceState(null, "", location.pathname + location.search);
  }
}

export async function renderDispatch(main, id) {
  const data = await api(`/api/dispatches/${encodeURIComponent(id)}`);
  return new DispatchView(main, id, data);
}

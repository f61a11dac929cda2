// The workflow graph: collapsed and laid out by the controller, drawn as SVG.
import { esc, num, statusLabel } from "./util.js";

const BAR = [
  "COMPLETED", "RUNNING", "PENDING", "NEW", "FAILED", "TIMED_OUT", "BUDGET_EXCEEDED",
  "CANCELLED", "SKIPPED",
];

/** The task ids of a graph node, from its `[first, last]` runs. */
function* members(node) {
  for (const [first, last] of node.members) {
    for (let id = first; id <= last; id++) yield id;
  }
}

function tally(node, tasks) {
  const counts = {};
  for (const id of members(node)) {
    const t = tasks.get(id);
    if (t) counts[t.status] = (counts[t.status] || 0) + 1;
  }
  return counts;
}

function overall(counts, total) {
  if (counts.FAILED || counts.TIMED_OUT || counts.BUDGET_EXCEEDED) return "FAILED";
  if (counts.RUNNING) return "RUNNING";
  if ((counts.COMPLETED || 0) === total) return "COMPLETED";
  if (counts.CANCELLED || counts.SKIPPED) return "CANCELLED";
  return "PENDING";
}

function fit(text, width) {
  const max = Math.max(4, Math.floor((width - 16) / 7));
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function inner(node, tasks) {
  const counts = tally(node, tasks);
  const state = overall(counts, node.count);
  let sub;
  if (node.count === 1) {
    sub = statusLabel(state === "PENDING" ? (tasks.get(node.members[0][0])?.status || state) : state);
  } else {
    const done = counts.COMPLETED || 0;
    const parts = [`${num(done)}/${num(node.count)} done`];
    if (counts.RUNNING) parts.push(`${num(counts.RUNNING)} running`);
    const failed = (counts.FAILED || 0) + (counts.TIMED_OUT || 0) + (counts.BUDGET_EXCEEDED || 0);
    if (failed) parts.push(`${num(failed)} failed`);
    sub = parts.join(" · ");
  }
  let x = 0;
  const bar = [];
  for (const status of BAR) {
    const n = counts[status];
    if (!n) continue;
    const w = (node.w * n) / node.count;
    bar.push(`<rect class="seg st-${status}" x="${x.toFixed(1)}" y="${node.h - 4}" width="${w.toFixed(1)}" height="4"/>`);
    x += w;
  }
  const title = `${node.label}${node.sequence ? " (one after another)" : ""}: ${sub}`;
  return `<title>${esc(title)}</title>
<rect class="box" width="${node.w}" height="${node.h}" rx="6"/>
<text class="label" x="8" y="16">${esc(fit(node.label, node.w))}</text>
<text class="sub" x="8" y="30">${esc(fit(sub, node.w))}</text>
<g class="bar">${bar.join("")}</g>`;
}

export class Graph {
  /**
   * @param el the element to draw into
   * @param graph the controller's layout: nodes with boxes, edges, size
   * @param tasks Map of task id to task row
   * @param onPick called with a graph node when it is clicked
   */
  constructor(el, graph, tasks, onPick) {
    this.el = el;
    this.graph = graph;
    this.tasks = tasks;
    this.nodeOf = new Map();
    for (const node of graph.nodes) for (const id of members(node)) this.nodeOf.set(id, node.id);
    this.draw();
    el.addEventListener("click", (event) => {
      const g = event.target.closest("g.node");
      if (g) onPick(graph.nodes[Number(g.dataset.node)]);
    });
  }

  draw() {
    const { nodes, edges, width, height } = this.graph;
    const paths = edges.map(([a, b]) => {
      const p = nodes[a];
      const c = nodes[b];
      const x1 = p.x + p.w / 2;
      const y1 = p.y + p.h;
      const x2 = c.x + c.w / 2;
      const y2 = c.y;
      const dy = (y2 - y1) / 2;
      return `<path d="M${x1} ${y1} C${x1} ${y1 + dy} ${x2} ${y2 - dy} ${x2} ${y2 - 2}"/>`;
    });
    const boxes = nodes.map((n) => {
      const state = overall(tally(n, this.tasks), n.count);
      return `<g class="node st-${state}${n.count > 1 ? " group" : ""}" data-node="${n.id}" transform="translate(${n.x},${n.y})">${inner(n, this.tasks)}</g>`;
    });
    this.el.innerHTML = `<svg class="graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="Workflow graph: ${nodes.length} nodes for ${this.graph.tasks} tasks">
<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0 0 L8 4 L0 8 z"/></marker></defs>
<g class="edges">${paths.join("")}</g><g class="nodes">${boxes.join("")}</g></svg>`;
  }

  /** Redraws the nodes holding these task ids. */
  update(taskIds) {
    const touched = new Set();
    for (const id of taskIds) {
      const n = this.nodeOf.get(id);
      if (n !== undefined) touched.add(n);
    }
    for (const i of touched) {
      const node = this.graph.nodes[i];
      const g = this.el.querySelector(`g.node[data-node="${i}"]`);
      if (!g) continue;
      const state = overall(tally(node, this.tasks), node.count);
      g.setAttribute("class", `node st-${state}${node.count > 1 ? " group" : ""}`);
      g.innerHTML = inner(node, this.tasks);
    }
  }

  /** The task ids of a graph node, as a Set. */
  static members(node) {
    return new Set(members(node));
  }
}

/* A job's lineage drawn as inline SVG (no library, no remote resource): images (with
   thumbnails and hashes) and the steps between them, across chained stages and the other
   jobs over the same content; a click on a node opens its record. And the Verify button,
   which re-runs the recorded steps and shows the verdict of each. */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 180;
const NODE_H = 84;
const COL_GAP = 70;
const ROW_GAP = 24;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

function clip(text, n) {
  const t = String(text || "");
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/* Columns by longest path from the sources, so work reads left to right. */
function layout(graph) {
  const incoming = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) incoming.get(e.target)?.push(e.source);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...(incoming.get(id) || []).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const node of graph.nodes) {
    const d = depthOf(node.id);
    (columns[d] ||= []).push(node);
  }
  const at = new Map();
  columns.forEach((column, c) => column.forEach((node, r) => at.set(node.id, {
    x: 10 + c * (NODE_W + COL_GAP), y: 10 + r * (NODE_H + ROW_GAP) })));
  const rows = Math.max(1, ...columns.map((c) => c.length));
  return { at, width: 20 + columns.length * (NODE_W + COL_GAP) - COL_GAP,
    height: 20 + rows * (NODE_H + ROW_GAP) - ROW_GAP };
}

function nodeShape(node, pos, jobId) {
  const label = node.kind === "image"
    ? `image sha256 ${node.sha256}` : node.kind === "upload"
      ? `upload of ${node.filename || "an image"}` : `step ${node.stage}: ${node.pipeline}, ${node.outcome}`;
  const g = s("g", { class: `node node-${node.kind}${node.job_id && node.job_id !== jobId && node.kind !== "image" ? " other-job" : ""}`,
    transform: `translate(${pos.x},${pos.y})`, tabindex: "0", role: "button",
    "data-id": node.id, "data-outcome": node.outcome || "", "aria-label": label });
  g.append(s("title", {}, label), s("rect", { width: NODE_W, height: NODE_H, rx: node.kind === "image" ? 4 : 12 }));
  if (node.kind === "image") {
    const facts = [(node.format || "").toUpperCase(), node.width ? `${node.width}×${node.height}` : "",
      node.size != null ? fmtSize(node.size) : ""].filter(Boolean).join(" ");
    let textX = 8;
    if (node.image_url) {
      const thumb = s("image", { x: 6, y: 6, width: 72, height: 72, preserveAspectRatio: "xMidYMid meet" });
      setSvgImage(thumb, node.image_url);
      g.append(thumb);
      textX = 84;
    }
    g.append(s("text", { x: textX, y: 22, class: "hash" }, clip(node.sha256, textX > 8 ? 12 : 22)),
      s("text", { x: textX, y: 42 }, clip(facts, textX > 8 ? 14 : 26)));
  } else if (node.kind === "upload") {
    g.append(s("text", { x: 10, y: 24, class: "title" }, "upload"),
      s("text", { x: 10, y: 44 }, clip(node.filename || "(no name)", 26)),
      s("text", { x: 10, y: 64, class: "hash" }, `job ${String(node.job_id).slice(0, 8)}`));
  } else {
    g.append(s("text", { x: 10, y: 24, class: "title" }, clip(node.stage, 26)),
      s("text", { x: 10, y: 44 }, clip(node.pipeline, 28)),
      s("text", { x: 10, y: 64, class: "hash" }, `${node.outcome} · job ${String(node.job_id).slice(0, 8)}`));
  }
  return g;
}

function setSvgImage(el, url) {
  if (!token()) { el.setAttribute("href", url); return; }
  api(url).then((resp) => (resp.ok ? resp.blob() : null)).then((blob) => {
    if (blob) el.setAttribute("href", URL.createObjectURL(blob));
  });
}

function drawGraph(graph, onOpen) {
  const { at, width, height } = layout(graph);
  const svg = s("svg", { class: "lineage-graph", viewBox: `0 0 ${width} ${height}`,
    width, height, role: "img", "aria-label": `Lineage: ${graph.nodes.length} nodes` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z" }))));
  for (const edge of graph.edges) {
    const a = at.get(edge.source);
    const b = at.get(edge.target);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W; const y1 = a.y + NODE_H / 2; const x2 = b.x; const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    svg.append(s("path", { class: `edge edge-${edge.relation}`, "marker-end": "url(#arrow)",
      d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }, s("title", {}, edge.relation)));
  }
  for (const node of graph.nodes) {
    const shape = nodeShape(node, at.get(node.id), graph.job_id);
    shape.addEventListener("click", () => onOpen(node));
    shape.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onOpen(node); }
    });
    svg.append(shape);
  }
  return svg;
}

async function openRecord(node, panel) {
  panel.hidden = false;
  panel.replaceChildren(h("p", { class: "hint" }, "Loading the record…"));
  const resp = await api(node.record_url, { headers: { Accept: "application/json" } });
  const title = node.kind === "image" ? `Image sha256:${node.sha256}` : `${node.kind} of job ${node.job_id}`;
  const body = resp.ok ? JSON.stringify(await resp.json(), null, 1) : (await errorOf(resp)).message;
  panel.replaceChildren(h("h4", {}, title), h("p", {}, h("a", { href: node.record_url }, node.record_url)),
    h("pre", { class: "record" }, body.length > 20000 ? `${body.slice(0, 20000)}\n…` : body));
}

async function loadGraph(job, box) {
  box.replaceChildren(h("p", { class: "hint" }, "Drawing the lineage…"));
  const resp = await api(`/jobs/${job.id}/graph`);
  if (!resp.ok) {
    box.replaceChildren(h("p", { class: "hint" }, `No lineage yet: ${(await errorOf(resp)).message}`));
    return;
  }
  const graph = await resp.json();
  const panel = h("div", { class: "record-panel", hidden: "" });
  const scroller = h("div", { class: "graph-scroll" }, drawGraph(graph, (node) => openRecord(node, panel)));
  box.replaceChildren(scroller, graph.truncated
    ? h("p", { class: "hint" }, "Only part of the lineage is drawn (more records exist).") : "", panel);
}

async function verifyJob(job, out) {
  out.replaceChildren(h("p", { class: "hint" }, "Re-running the recorded steps…"));
  const resp = await api(`/jobs/${job.id}/verify`, { method: "POST" });
  if (!resp.ok) {
    const err = await errorOf(resp);
    out.replaceChildren(h("p", { class: "verdict", "data-verified": "unknown" }, `No verdict: ${err.message}`));
    return;
  }
  const report = await resp.json();
  out.replaceChildren(
    h("p", { class: "verdict", "data-verified": String(report.verified) },
      report.verified ? "✓ Verified: every step gives the recorded bytes" : `✗ Not verified: ${report.outcome}`),
    h("ul", { class: "verify-steps" }, ...report.steps.map((step) => h("li", { "data-outcome": step.outcome },
      h("strong", {}, step.outcome), ` ${step.stage}: `, h("code", {}, step.pipeline), ` — ${step.message}`))));
}

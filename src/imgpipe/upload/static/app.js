/* imgpipe's page: upload images, follow their jobs, show results and provenance.
   Plain JavaScript, no build step; talks only to the upload service it came from. */
"use strict";

const POLL_MS = 1000;
const PARALLEL_UPLOADS = 3;
const STORE_KEY = "imgpipe.jobs";
const TOKEN_KEY = "imgpipe.token";
const FINISHED = new Set(["done", "failed", "missing"]);
const LABELS = {
  uploading: "Uploading", queued: "Uploaded · queued", processing: "Processing",
  done: "Done", failed: "Failed", missing: "Unknown job",
};

const $ = (sel, root = document) => root.querySelector(sel);
const jobs = [];
let pipelineState = { ok: true, text: "" };
let validateSeq = 0;
let validateTimer = null;
let uploadsRunning = 0;
const uploadQueue = [];

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v; else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== "") el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function fmtSize(n) {
  if (n === null || n === undefined) return "size unknown";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

function fmtTime(t) {
  if (!t) return "unknown time";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

function announce(text) {
  const live = $("#announcer");
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 50);
}

/* ---------------------------------------------------------------- API tokens */

function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}

function authHeaders(extra = {}) {
  return token() ? { ...extra, Authorization: `Bearer ${token()}` } : extra;
}

function askForToken(err) {
  const form = $("#token-form");
  $("#token-status").textContent = err.message || "This imgpipe needs an API token.";
  if (form.hidden) {
    form.hidden = false;
    $("#token").focus();
  }
}

/* fetch() with the API token when one is set; a 401 asks the user for a token. */
async function api(url, options = {}) {
  const resp = await fetch(url, { ...options, headers: authHeaders(options.headers || {}) });
  if (resp.status === 401) askForToken(await errorOf(resp.clone()));
  return resp;
}

/* Images and downloads: plain URLs, or blob URLs fetched with the token when one is set. */
function setImage(img, url) {
  if (!token()) { img.src = url; return; }
  api(url).then((resp) => (resp.ok ? resp.blob() : null)).then((blob) => {
    if (blob) img.src = URL.createObjectURL(blob);
  });
}

function authLink(link) {
  link.addEventListener("click", async (ev) => {
    if (!token()) return;
    ev.preventDefault();
    const resp = await api(link.getAttribute("href"));
    if (!resp.ok) return;
    const blobUrl = URL.createObjectURL(await resp.blob());
    const a = h("a", { href: blobUrl, download: link.getAttribute("download") || "" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(blobUrl), 60000);
  });
  return link;
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return { reason: `http_${resp.status}`, message: `The service answered ${resp.status}.` };
}

/* ---------------------------------------------------------------- pipeline */

function chosenPipeline() {
  const typed = $("#pipeline").value.trim();
  return typed || $("#preset").value;
}

function showPipeline(ok, text) {
  const line = $("#pipeline-status");
  line.className = "status-line " + (ok ? "ok" : "error");
  line.textContent = text;
  const typed = $("#pipeline").value.trim() !== "";
  $("#pipeline").setAttribute("aria-invalid", String(!ok && typed));
}

async function validatePipeline() {
  const spec = chosenPipeline();
  const seq = ++validateSeq;
  if (!spec) {
    pipelineState = { ok: true, text: "" };
    showPipeline(true, "Default pipeline");
    return;
  }
  try {
    const resp = await api(`/pipelines/validate?pipeline=${encodeURIComponent(spec)}`);
    if (seq !== validateSeq) return;
    if (resp.ok) {
      const body = await resp.json();
      pipelineState = { ok: true, text: spec };
      showPipeline(true, `✓ ${body.canonical}`);
    } else {
      const err = await errorOf(resp);
      pipelineState = { ok: false, text: spec, error: err };
      showPipeline(false, `✗ ${err.message}`);
    }
  } catch (_) {
    if (seq === validateSeq) showPipeline(false, "Cannot reach the service to check the pipeline.");
  }
}

function scheduleValidation() {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validatePipeline, 250);
}

async function loadPresets() {
  const select = $("#preset");
  try {
    const resp = await api("/presets");
    if (!resp.ok) throw new Error(`presets: ${resp.status}`);
    const body = await resp.json();
    select.replaceChildren(...body.presets.map((p) =>
      h("option", { value: p.name, selected: p.name === body.default }, `${p.name} — ${p.pipeline}`)));
  } catch (_) {
    select.replaceChildren(h("option", { value: "" }, "(default pipeline)"));
  }
  await validatePipeline();
}

/* ---------------------------------------------------------------- job cards */

function saveJobs() {
  const kept = jobs.filter((j) => j.id).map((j) => ({ id: j.id, filename: j.filename }));
  try { localStorage.setItem(STORE_KEY, JSON.stringify(kept)); } catch (_) { /* private mode */ }
}

function addJob(filename, fields = {}) {
  const el = $("#job-template").content.firstElementChild.cloneNode(true);
  const job = { filename, status: "uploading", id: null, view: null, el, shown: "", ...fields };
  $(".job-name", el).textContent = filename || "unnamed image";
  $(".provenance", el).addEventListener("toggle", () => {
    if (!$(".provenance", el).open) return;
    loadProvenance(job);
    loadGraph(job, $(".lineage", el));
  });
  $(".verify", el).addEventListener("click", () => verifyJob(job, $(".verify-report", el)));
  jobs.unshift(job);
  $("#jobs").prepend(el);
  $("#jobs-empty").hidden = true;
  render(job);
  return job;
}

function setStatus(job, status) {
  if (job.status !== status && status !== "uploading") {
    announce(`${job.filename || "image"}: ${LABELS[status] || status}`);
  }
  job.status = status;
  render(job);
}

function render(job) {
  const { el, view } = job;
  el.dataset.status = job.status;
  if (job.id) el.dataset.jobId = job.id;
  $(".badge", el).textContent = LABELS[job.status] || job.status;
  $(".upload-progress", el).hidden = job.status !== "uploading";
  const detail = $(".job-detail", el);
  const pipelines = view && view.pipelines && view.pipelines.length ? view.pipelines.join(", ") : "";
  if (job.status === "uploading") {
    detail.textContent = job.progressText || "Starting upload…";
  } else if (job.status === "failed") {
    const err = job.error || (view && view.error) || {};
    detail.textContent = `${err.reason || "failed"}: ${err.message || "no reason recorded"}`;
  } else if (job.status === "missing") {
    detail.textContent = "The service knows no such job (it may have been removed).";
  } else if (job.status === "done") {
    detail.textContent = `${view.outputs.length} output(s) · ${pipelines}`;
  } else {
    detail.textContent = job.status === "queued"
      ? `Waiting for a runner · ${pipelines || "job " + job.id}`
      : `Running ${pipelines}`;
  }
  $(".provenance", el).hidden = !job.id || job.status === "missing";
  const key = job.status === "done" ? `done:${view.outputs.length}` : "";
  if (key !== job.shown) {
    job.shown = key;
    renderResults(job);
  }
}

function caption(kind, parts) {
  return h("figcaption", {}, h("strong", {}, kind), " · ", parts.filter(Boolean).join(" · "));
}

function renderResults(job) {
  const box = $(".results", job.el);
  if (job.status !== "done") {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const { view } = job;
  const input = view.input || {};
  const inCaption = caption("Input", [(input.format || "").toUpperCase(), null, fmtSize(input.size)]);
  const inImg = h("img", { alt: `Input: ${job.filename || job.id}` });
  setImage(inImg, `/jobs/${job.id}/input`);
  inImg.addEventListener("load", () => {
    inCaption.replaceWith(caption("Input", [(input.format || "").toUpperCase(),
      `${inImg.naturalWidth}×${inImg.naturalHeight}`, fmtSize(input.size)]));
  });
  const figures = [h("figure", { class: "input" }, inImg, inCaption)];
  view.outputs.forEach((out, i) => {
    const name = `${(job.filename || job.id).replace(/\.[^.]*$/, "")}-${i}.${out.format || "bin"}`;
    const img = h("img", { alt: `Output ${i + 1} of ${job.filename || job.id}` });
    setImage(img, out.url);
    figures.push(h("figure", { class: "output" }, img,
      caption(`Output ${i + 1}`, [(out.format || "").toUpperCase(),
        out.width && out.height ? `${out.width}×${out.height}` : null, fmtSize(out.size)]),
      h("p", { class: "hint" }, h("code", {}, out.pipeline || "")),
      authLink(h("a", { href: out.url, download: name, class: "download" },
        `Download ${out.format || "output"}`)),
      out.credentials_url ? credentialsPanel(out.credentials_url) : null));
  });
  box.replaceChildren(...figures);
  box.hidden = false;
}

/* ---------------------------------------------------------------- content credentials */

const VERDICTS = {
  trusted: "Trusted: signature valid, signer anchored",
  untrusted: "Valid signature, signer not trusted here",
  invalid: "Invalid: the file or its manifest was changed",
  none: "No Content Credentials",
};

function renderCredentials(found) {
  const parts = [h("p", { class: `cred-verdict cred-${found.verdict}` },
    h("strong", {}, VERDICTS[found.verdict] || found.verdict),
    found.state ? ` (C2PA: ${found.state})` : "")];
  for (const f of found.failures || []) {
    parts.push(h("p", { class: "prov-failed" }, h("code", {}, f.code), " ", f.explanation));
  }
  (found.manifests || []).forEach((m, depth) => {
    const step = m.imgpipe || {};
    parts.push(h("div", { class: "cred-manifest" },
      h("h4", {}, depth ? `Made from: ${m.title || "earlier manifest"}` : (m.title || "This image")),
      h("p", {}, "Signed by ", h("strong", {}, m.signer || "unknown"),
        m.issuer ? ` (${m.issuer})` : "", m.algorithm ? ` · ${m.algorithm}` : ""),
      step.job_id ? h("p", { class: "hint" }, `imgpipe job ${step.job_id} · stage ${step.stage || "-"}`) : null,
      h("ol", { class: "cred-actions", "aria-label": "Actions" }, (m.actions || []).map((a) =>
        h("li", {}, h("code", {}, a.action), a.description ? ` ${a.description}` : ""))),
      h("ul", { class: "cred-ingredients", "aria-label": "Ingredients" }, (m.ingredients || []).map((i) =>
        h("li", {}, `${i.relationship || "ingredient"}: ${i.title || ""} `,
          i.instance_id ? h("code", {}, i.instance_id) : "")))));
  });
  return parts;
}

function credentialsPanel(url) {
  const body = h("div", { class: "cred-body" }, h("p", { class: "hint" }, "Loading…"));
  const panel = h("details", { class: "credentials" }, h("summary", {}, "Content Credentials"), body);
  panel.addEventListener("toggle", async () => {
    if (!panel.open || panel.dataset.loaded) return;
    panel.dataset.loaded = "1";
    try {
      const resp = await api(url);
      body.replaceChildren(...(resp.ok ? renderCredentials(await resp.json())
        : [h("p", { class: "prov-failed" }, (await errorOf(resp)).message)]));
    } catch (_) {
      delete panel.dataset.loaded;
      body.replaceChildren(h("p", { class: "hint" }, "Cannot reach the service for the credentials."));
    }
  });
  return panel;
}

/* ---------------------------------------------------------------- provenance */

const PROV_KINDS = ["entity", "activity", "agent", "used", "wasGeneratedBy", "wasAssociatedWith",
  "wasEndedBy"];
const SHOWN_ATTRS = new Set(["filename", "pipeline", "operations", "attempt", "outcome", "reason",
  "message"]);

function flattenProv(doc) {
  const parts = [doc, ...Object.values(doc.bundle || {})];
  const out = {};
  for (const kind of PROV_KINDS) {
    out[kind] = {};
    for (const p of parts) Object.assign(out[kind], p[kind] || {});
  }
  return out;
}

function provValue(v) {
  if (Array.isArray(v)) return v.map(provValue).join(", ");
  if (v && typeof v === "object") return "$" in v ? String(v.$) : JSON.stringify(v);
  return v === undefined || v === null ? "" : String(v);
}

/* An attribute by its local name, whatever the namespace prefix (imgpipe:size, ex:size). */
function attr(attrs, name) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === name || k.endsWith(`:${name}`)) return provValue(v);
  }
  return "";
}

function describeEntity(attrs, id) {
  const sha = attr(attrs, "sha256") || id.replace(/^.*:/, "");
  const dims = attr(attrs, "width") && attr(attrs, "height")
    ? ` ${attr(attrs, "width")}×${attr(attrs, "height")}` : "";
  const size = attr(attrs, "size") ? `, ${fmtSize(Number(attr(attrs, "size")))}` : "";
  const fmt = (attr(attrs, "format") || attr(attrs, "mediaType") || "image").toUpperCase();
  return `${fmt}${dims}${size} (sha256 ${sha.slice(0, 12)}…)`;
}

function timeOf(attrs, key) {
  const t = Date.parse(provValue(attrs[key] || ""));
  return isNaN(t) ? Infinity : t;
}

function renderProv(doc) {
  const p = flattenProv(doc);
  const rels = (kind, key, id) => Object.values(p[kind]).filter((r) => r[key] === id);
  const isUpload = (a) => /upload/i.test(provValue(a["prov:type"] || ""));
  const acts = Object.entries(p.activity).sort(([, a], [, b]) =>
    (isUpload(b) - isUpload(a)) || (timeOf(a, "prov:startTime") - timeOf(b, "prov:startTime")));
  const items = acts.map(([id, attrs]) => {
    const used = rels("used", "prov:activity", id).map((r) => describeEntity(p.entity[r["prov:entity"]], r["prov:entity"]));
    const made = rels("wasGeneratedBy", "prov:activity", id)
      .map((r) => describeEntity(p.entity[r["prov:entity"]], r["prov:entity"]));
    const agents = rels("wasAssociatedWith", "prov:activity", id).map((r) => {
      const a = p.agent[r["prov:agent"]] || {};
      const label = a["prov:label"] ? provValue(a["prov:label"])
        : attr(a, "address") ? `client ${attr(a, "address")}` : r["prov:agent"];
      return label + (attr(r, "instance") ? ` on ${attr(r, "instance")}` : "");
    });
    const ended = rels("wasEndedBy", "prov:activity", id).filter((r) => attr(r, "outcome") === "failed");
    const details = Object.entries(attrs).filter(([k]) => SHOWN_ATTRS.has(k.replace(/^.*:/, "")));
    const start = attrs["prov:startTime"] ? fmtTime(provValue(attrs["prov:startTime"])) : "";
    const end = attrs["prov:endTime"] ? fmtTime(provValue(attrs["prov:endTime"])) : "";
    return h("li", { class: "prov-activity" },
      h("strong", {}, attrs["prov:label"] ? provValue(attrs["prov:label"]) : id),
      start || end ? h("div", {}, "When: ", start === end ? start : `${start} → ${end}`) : null,
      used.length ? h("div", {}, "Used: ", used.join("; ")) : null,
      made.length ? h("div", {}, "Made: ", made.join("; ")) : null,
      agents.length ? h("div", {}, "Software: ", agents.join("; ")) : null,
      ended.map((r) => h("div", { class: "prov-failed" },
        `Failed: ${attr(r, "reason")} ${attr(r, "message")}`.trim())),
      details.length ? h("ul", {}, details.map(([k, v]) =>
        h("li", {}, h("code", {}, k.replace(/^.*:/, "")), " ", provValue(v)))) : null);
  });
  return [h("h4", {}, "What was done, with which software, when"),
    items.length ? h("ol", {}, items) : h("p", {}, "No activity recorded yet.")];
}

function renderJobSummary(view) {
  const steps = (view.outputs || []).map((o) => h("li", { class: "prov-activity" },
    h("strong", {}, `${o.stage}: `), h("code", {}, o.pipeline || ""),
    ` → ${(o.format || "").toUpperCase()} ${o.width}×${o.height}, ${fmtSize(o.size)}, `
    + `finished ${fmtTime(o.completed_at)}`));
  return [
    h("p", {}, `Received ${fmtTime(view.received_at)} as ${view.filename || "an unnamed image"} `,
      `(sha256 ${(view.input && view.input.sha256 || "unknown").slice(0, 16)}…).`),
    steps.length ? h("ol", {}, steps) : h("p", {}, "No step has finished yet."),
  ];
}

async function loadProvenance(job) {
  const body = $(".prov-body", job.el);
  const url = (job.view && job.view.provenance_url) || `/jobs/${job.id}/provenance`;
  const links = h("p", {},
    authLink(h("a", { href: url, class: "prov-json", download: `${job.id}.prov.json` }, "Raw PROV-JSON")),
    " · ", authLink(h("a", { href: `${url}?format=provn`, download: `${job.id}.provn` }, "PROV-N")));
  let content;
  try {
    const resp = await api(url, { headers: { Accept: "application/json" } });
    if (resp.ok) {
      content = renderProv(await resp.json());
    } else {
      const err = await errorOf(resp);
      content = [...(job.view ? renderJobSummary(job.view) : []),
        h("p", { class: "hint" }, `The full PROV record is not available: ${err.message}`)];
    }
  } catch (_) {
    content = [h("p", { class: "hint" }, "Cannot reach the service for the provenance record.")];
  }
  body.replaceChildren(...[content].flat(2).filter(Boolean), links);
}

/* ---------------------------------------------------------------- uploads */

function upload(job, file, pipeline) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const url = "/upload" + (pipeline ? `?pipeline=${encodeURIComponent(pipeline)}` : "");
    xhr.open("POST", url);
    if (token()) xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      const pct = Math.round((ev.loaded / ev.total) * 100);
      $(".upload-progress", job.el).value = pct;
      job.progressText = `${pct}% of ${fmtSize(file.size)}`;
      render(job);
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response || {};
      if (xhr.status === 202 && body.jobs && body.jobs.length) {
        const accepted = body.jobs[0];
        job.id = accepted.job_id;
        job.view = { ...accepted, outputs: [], provenance_url: `/jobs/${accepted.job_id}/provenance` };
        saveJobs();
        setStatus(job, "queued");
        schedulePoll(0);
      } else {
        job.error = body.error || { reason: `http_${xhr.status}`, message: "The upload was refused." };
        if (xhr.status === 401) askForToken(job.error);
        setStatus(job, "failed");
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      job.error = { reason: "network_error", message: "The upload did not reach the service." };
      setStatus(job, "failed");
      resolve();
    });
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function pumpUploads() {
  while (uploadsRunning < PARALLEL_UPLOADS && uploadQueue.length) {
    const { job, file, pipeline } = uploadQueue.shift();
    uploadsRunning += 1;
    upload(job, file, pipeline).then(() => { uploadsRunning -= 1; pumpUploads(); });
  }
}

async function uploadFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  clearTimeout(validateTimer);
  await validatePipeline();
  if (!pipelineState.ok) {
    showPipeline(false, `✗ Cannot upload yet: ${pipelineState.error.message}`);
    $("#pipeline").focus();
    return;
  }
  const pipeline = chosenPipeline();
  for (const file of list) uploadQueue.push({ job: addJob(file.name), file, pipeline });
  pumpUploads();
}

/* ---------------------------------------------------------------- polling */

let pollTimer = null;

function schedulePoll(delay = LIVE.connected ? LIVE_POLL_MS : POLL_MS) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

async function poll() {
  const open = jobs.filter((j) => j.id && !FINISHED.has(j.status)).slice(0, 100);
  if (!open.length) return;
  try {
    const resp = await api(`/jobs?ids=${open.map((j) => j.id).join(",")}`);
    if (resp.ok) {
      const body = await resp.json();
      const byId = new Map(body.jobs.map((v) => [v.job_id, v]));
      for (const job of open) {
        const view = byId.get(job.id);
        if (view) {
          job.view = view;
          setStatus(job, view.status);
          if (FINISHED.has(view.status) && $(".provenance", job.el).open) {
            loadProvenance(job);
            loadGraph(job, $(".lineage", job.el));
          }
        } else if (body.missing.includes(job.id)) {
          setStatus(job, "missing");
        }
      }
    }
  } catch (_) { /* the service is restarting: try again */ }
  schedulePoll();
}

function restoreJobs() {
  let saved = [];
  try { saved = JSON.parse(localStorage.getItem(STORE_KEY) || "[]"); } catch (_) { saved = []; }
  for (const entry of saved.reverse()) {
    if (entry && typeof entry.id === "string") {
      const job = addJob(entry.filename, { id: entry.id, status: "queued" });
      job.view = { job_id: entry.id, pipelines: [], outputs: [] };
      render(job);
    }
  }
  if (saved.length) schedulePoll(0);
}

/* ---------------------------------------------------------------- wiring */

function wire() {
  document.body.append(h("div", { id: "announcer", class: "visually-hidden", "aria-live": "polite" }));
  $("#preset").addEventListener("change", scheduleValidation);
  $("#pipeline").addEventListener("input", scheduleValidation);
  $("#upload-form").addEventListener("submit", (ev) => ev.preventDefault());
  const input = $("#files");
  input.addEventListener("change", () => { uploadFiles(input.files).then(() => { input.value = ""; }); });
  const drop = $("#drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); uploadFiles(ev.dataTransfer.files); });
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    try { sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim()); } catch (_) { /* private mode */ }
    $("#token-form").hidden = true;
    loadPresets();
    jobs.forEach((job) => { job.shown = ""; render(job); });
    schedulePoll(0);
  });
  $("#clear-jobs").addEventListener("click", () => {
    for (const job of jobs.filter((j) => FINISHED.has(j.status))) {
      job.el.remove();
      jobs.splice(jobs.indexOf(job), 1);
    }
    saveJobs();
    $("#jobs-empty").hidden = jobs.length > 0;
  });
  restoreJobs();
  loadPresets();
  wireStatus();
  followEvents();
}

document.addEventListener("DOMContentLoaded", wire);

/* Live updates for the page: GET /events (server-sent events) read with fetch(), so the
   API token can be sent, resumed after a cut with Last-Event-ID. A record of a job on the
   page makes it read that job again; polling stays, slower, as the fallback. */
"use strict";

const LIVE_POLL_MS = 15000;
const LIVE = { connected: false, lastId: null, records: 0, reconnects: 0, completions: [],
  listeners: [], controller: null };

function setLive(on) {
  LIVE.connected = on;
  const el = $("#live-status");
  if (!el) return;
  el.dataset.live = on ? "on" : "off";
  el.textContent = on ? "● Live" : "○ Reconnecting… (polling meanwhile)";
}

function jobsPerSecond(windowMs = 60000) {
  const since = Date.now() - windowMs;
  LIVE.completions = LIVE.completions.filter((t) => t >= since);
  return LIVE.completions.length / (windowMs / 1000);
}

function onRecord(record) {
  LIVE.records += 1;
  if (record.kind === "step.completed") LIVE.completions.push(Date.now());
  const job = jobs.find((j) => j.id === record.job_id);
  if (job && !FINISHED.has(job.status)) schedulePoll(0);
  LIVE.listeners.forEach((listener) => listener(record));
}

function dispatchBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at);
    let value = at < 0 ? "" : line.slice(at + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "data") data.push(value);
    else if (name === "id") LIVE.lastId = value;
  }
  if (!data.length || event !== "record") return;
  try { onRecord(JSON.parse(data.join("\n"))); } catch (_) { /* not JSON: skip */ }
}

async function readEvents() {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (LIVE.lastId) headers["Last-Event-ID"] = LIVE.lastId;
  LIVE.controller = new AbortController();
  const resp = await fetch("/events", { headers, signal: LIVE.controller.signal });
  if (!resp.ok || !resp.body) throw new Error(`events: HTTP ${resp.status}`);
  setLive(true);
  schedulePoll(0); // catch up with anything that changed while the stream was down
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatchBlock(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
  }
}

async function followEvents() {
  let failures = 0;
  for (;;) {
    try {
      await readEvents();
      failures = 0;
    } catch (_) {
      failures += 1;
    }
    setLive(false);
    LIVE.reconnects += 1;
    schedulePoll(0);
    await new Promise((done) => setTimeout(done, Math.min(15000, 500 * 2 ** Math.min(failures, 5))));
  }
}

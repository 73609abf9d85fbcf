/* The operator's panel: queue depth and dead letters per stage (GET /status), jobs per
   second (from the live events), and replay of dead letters for those allowed to (the
   same operation as `imgpipe dlq replay`). Refreshed every few seconds while open. */
"use strict";

const STATUS_MS = 5000;
let statusTimer = null;

function letterItem(letter) {
  return h("li", { class: "dead-letter" },
    h("strong", {}, letter.reason || "failed"), `: ${letter.error || "no message"} `,
    h("span", { class: "hint" }, `job ${letter.job_id || "?"} · ${letter.attempts} attempt(s)`
      + `${letter.replays ? ` · replayed ${letter.replays}×` : ""} · ${fmtTime(letter.dead_lettered_at)}`));
}

async function replay(stage, button) {
  button.disabled = true;
  const resp = await api(`/dead-letters/${encodeURIComponent(stage.exchange)}/replay`, { method: "POST" });
  const note = resp.ok ? `Replayed ${(await resp.json()).replayed.length} message(s).`
    : (await errorOf(resp)).message;
  announce(note);
  $("#status-note").textContent = note;
  await refreshStatus();
}

function stageRow(stage, mayReplay) {
  const dead = stage.dead_lettered ?? "?";
  const cells = [
    h("th", { scope: "row" }, stage.exchange),
    h("td", { class: "num", "data-field": "waiting" }, String(stage.waiting ?? "?")),
    h("td", { class: "num", "data-field": "dead" }, String(dead)),
  ];
  const action = h("td", {});
  if (mayReplay && stage.dead_lettered) {
    const button = h("button", { type: "button", class: "secondary replay" }, `Replay ${dead}`);
    button.addEventListener("click", () => replay(stage, button));
    action.append(button);
  }
  return h("tr", { "data-stage": stage.exchange }, ...cells, action);
}

async function refreshStatus() {
  clearTimeout(statusTimer);
  const panel = $("#status-panel");
  if (!panel.open) return;
  const body = $("#status-body");
  try {
    const resp = await api("/status");
    if (!resp.ok) {
      body.replaceChildren(h("p", { class: "hint" }, (await errorOf(resp)).message));
    } else {
      const status = await resp.json();
      const table = h("table", { class: "status-table" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Stage"), h("th", { scope: "col" }, "Waiting"),
          h("th", { scope: "col" }, "Dead letters"), h("th", { scope: "col" }, ""))),
        h("tbody", {}, ...status.stages.map((stage) => stageRow(stage, status.may_replay))));
      const letters = status.stages.flatMap((stage) => stage.dead_letters.map((l) => ({ ...l, stage })));
      body.replaceChildren(
        h("p", {}, h("strong", { id: "jobs-per-second" }, jobsPerSecond().toFixed(2)),
          " steps completed per second (last minute, from the live events)"),
        table,
        letters.length ? h("h3", {}, "Dead letters") : "",
        letters.length ? h("ul", { class: "dead-letters" }, ...letters.map(letterItem)) : "",
        status.letters_shown ? "" : h("p", { class: "hint" }, "Dead letters are shown to operators only."),
        status.may_replay ? "" : h("p", { class: "hint" }, "Replay is for operators (UPLOAD_OPERATORS)."));
    }
  } catch (_) {
    body.replaceChildren(h("p", { class: "hint" }, "Cannot reach the service."));
  }
  statusTimer = setTimeout(refreshStatus, STATUS_MS);
}

function wireStatus() {
  $("#status-panel").addEventListener("toggle", refreshStatus);
}

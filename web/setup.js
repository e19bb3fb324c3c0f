// The setup page: shown while the server waits for its CLIP model (indexer state
// `waiting_for_model`), with that model's name and how to get it onto this machine.

const $ = (id) => document.getElementById(id);

// Shows or hides the setup page for the indexer's status `ix` (from GET /api/status).
export function showSetup(ix) {
  const waiting = ix.state === "waiting_for_model";
  $("setup").hidden = !waiting;
  if (!waiting) return;
  const model = ix.waiting_for_model || "";
  for (const el of document.querySelectorAll(".setup-model")) el.textContent = model;
  // A hub id's folder in the cache: models--ORG--NAME.
  $("setup-cache-name").textContent = model.includes("/") && !model.startsWith("/")
    ? `models--${model.replace("/", "--")}` : "models--ORG--NAME";
  $("setup-reason").textContent = ix.last_error || "";
  $("setup-retry").textContent = ix.retry_in_s ?? "";
}

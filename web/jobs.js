// The Jobs view: the server's background passes (GET /api/jobs) with a progress bar, rate and
// time left each, refreshed while shown, each paused and resumed with its button (POST
// /api/jobs/NAME/pause|resume, remembered by the library); and the files that could not be
// read, with why (GET /api/failures), each tried again with "Retry" (POST /api/failures/retry).

let request = null; // the page's JSON call
let refresh = () => {};
const retried = new Map(); // path → what its retry said, kept through refreshes

const post = (path, body) => request(path, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body || {}),
});

function duration(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 360) / 10} h`;
}

function rate(perSecond) {
  return perSecond >= 10 ? `${Math.round(perSecond)}/s` : perSecond >= 1 ? `${perSecond.toFixed(1)}/s` : `${Math.round(perSecond * 60)}/min`;
}

function job(j) {
  const row = document.createElement("li");
  row.className = "job";
  row.dataset.name = j.name;
  const id = `job-${j.name}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = j.label;
  const bar = document.createElement("progress");
  bar.id = id;
  bar.max = Math.max(j.total, 1);
  bar.value = j.total ? j.done : 0;
  const text = document.createElement("span");
  text.className = "job-text";
  if (j.paused) text.textContent = "paused";
  else if (!j.on) text.textContent = "off";
  else if (!j.total) text.textContent = "nothing to do";
  else {
    text.textContent = `${j.done.toLocaleString()} / ${j.total.toLocaleString()}`;
    if (j.running && j.rate_per_s) text.textContent += ` · ${rate(j.rate_per_s)} · ${duration(j.eta_s)} left`;
    else if (!j.running) text.textContent += " · done";
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "job-pause";
  button.dataset.key = `pause-${j.name}`;
  button.textContent = j.paused ? "Resume" : "Pause";
  button.setAttribute("aria-label", `${j.paused ? "Resume" : "Pause"} ${j.label.toLowerCase()}`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await post(`/api/jobs/${encodeURIComponent(j.name)}/${j.paused ? "resume" : "pause"}`);
    } catch (e) {
      text.textContent = e.message;
    }
    refresh();
  });
  row.append(label, bar, text, button);
  return row;
}

function failure(f) {
  const li = document.createElement("li");
  const path = document.createElement("code");
  path.textContent = f.path;
  const reason = document.createElement("span");
  reason.textContent = ` ${f.reason}${f.attempts > 1 ? ` (${f.attempts} tries)` : ""}`;
  const retry = document.createElement("button");
  retry.type = "button";
  retry.className = "retry";
  retry.dataset.key = `retry-${f.path}`;
  if (retried.has(f.path)) reason.textContent = retried.get(f.path);
  retry.textContent = "Retry";
  retry.setAttribute("aria-label", `Retry ${String(f.path).split("/").pop()}`);
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    reason.textContent = " Trying again…";
    try {
      const done = await post("/api/failures/retry", f.path_bytes ? { path: f.path, path_bytes: f.path_bytes } : { path: f.path });
      reason.textContent = done.failed_again ? ` Still failing: ${done.failed_again}`
        : done.indexed ? " Indexed." : " Will be tried with the next pass.";
      retried.set(f.path, reason.textContent);
    } catch (e) {
      reason.textContent = ` ${e.message}`;
    }
    retry.disabled = false;
  });
  li.append(path, reason, " ", retry);
  return li;
}

let timer = null;

// Shows the jobs and failures; refreshes every 2 s while `stillShown()` holds.
export async function showJobs(json, stillShown) {
  clearTimeout(timer);
  request = json;
  refresh = () => showJobs(json, stillShown);
  const list = document.getElementById("jobs-list");
  try {
    const { jobs, state, last_error } = await json("/api/jobs");
    if (!stillShown()) return;
    // The lists are drawn anew; a focused button keeps the focus in its new drawing.
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    const refocus = () => {
      const again = focused && [...document.querySelectorAll("#jobs button[data-key]")].find((b) => b.dataset.key === focused);
      if (again) again.focus();
    };
    list.replaceChildren(...jobs.map(job));
    refocus();
    document.getElementById("jobs-state").textContent =
      state === "failed" && last_error ? `The last pass failed: ${last_error}` : `Indexer: ${state.replaceAll("_", " ")}`;
    const { failures, total } = await json("/api/failures");
    if (!stillShown()) return;
    document.getElementById("failures-title").textContent = total
      ? `${total} file${total === 1 ? "" : "s"} could not be read` : "Every file could be read";
    document.getElementById("failures-list").replaceChildren(...failures.map(failure));
    refocus();
  } catch (e) {
    document.getElementById("jobs-state").textContent = e.message;
  }
  timer = setTimeout(() => { if (stillShown()) showJobs(json, stillShown); }, 2000);
}

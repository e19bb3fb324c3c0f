// The Jobs view: the server's background passes (GET /api/jobs) with a progress bar, rate and
// time left each, refreshed while shown, and the files that could not be read, with why
// (GET /api/failures).

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
  if (!j.on) text.textContent = "off";
  else if (!j.total) text.textContent = "nothing to do";
  else {
    text.textContent = `${j.done.toLocaleString()} / ${j.total.toLocaleString()}`;
    if (j.running && j.rate_per_s) text.textContent += ` · ${rate(j.rate_per_s)} · ${duration(j.eta_s)} left`;
    else if (!j.running) text.textContent += " · done";
  }
  row.append(label, bar, text);
  return row;
}

function failure(f) {
  const li = document.createElement("li");
  const path = document.createElement("code");
  path.textContent = f.path;
  const reason = document.createElement("span");
  reason.textContent = ` ${f.reason}${f.attempts > 1 ? ` (${f.attempts} tries)` : ""}`;
  li.append(path, reason);
  return li;
}

let timer = null;

// Shows the jobs and failures; refreshes every 2 s while `stillShown()` holds.
export async function showJobs(json, stillShown) {
  clearTimeout(timer);
  const list = document.getElementById("jobs-list");
  try {
    const { jobs, state, last_error } = await json("/api/jobs");
    if (!stillShown()) return;
    list.replaceChildren(...jobs.map(job));
    document.getElementById("jobs-state").textContent =
      state === "failed" && last_error ? `The last pass failed: ${last_error}` : `Indexer: ${state.replaceAll("_", " ")}`;
    const { failures, total } = await json("/api/failures");
    if (!stillShown()) return;
    document.getElementById("failures-title").textContent = total
      ? `${total} file${total === 1 ? "" : "s"} could not be read` : "Every file could be read";
    document.getElementById("failures-list").replaceChildren(...failures.map(failure));
  } catch (e) {
    document.getElementById("jobs-state").textContent = e.message;
  }
  timer = setTimeout(() => { if (stillShown()) showJobs(json, stillShown); }, 2000);
}

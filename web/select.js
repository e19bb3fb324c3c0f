// Selection on the photo grids (the timeline, the folders and search results) and the actions
// on what is selected. Space on a photo, a click on its corner circle, or Ctrl/⌘-click selects
// it; once something is selected a click (or Space) selects or unselects, Shift selects the
// whole range from the last photo chosen, and Esc clears. A bar shows the count and the
// actions: add a tag (POST /api/tags/add; `tag:NAME` then finds the photos), download the
// originals as one zip (GET /api/download), clear. The photo's state is its `aria-pressed` (a toggle to assistive technology)
// and a check mark in its corner.

const GRIDS = "#timeline-groups, #results";
const ITEMS = ".tile, .card";
const ALL_ITEMS = "#timeline-groups .tile, #timeline-groups .card, #results .tile, #results .card";
const CORNER = 36; // px: the corner circle a click selects with

const selected = new Map(); // id → file name (for downloads)
let anchor = null; // the last photo chosen, where a Shift range starts
let json = null;
let api = null;
let hasToken = () => false;

const $ = (id) => document.getElementById(id);

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function itemOf(target) {
  const item = target.closest && target.closest(ITEMS);
  return item && item.closest(GRIDS) ? item : null;
}

function nameOf(item) {
  const img = item.querySelector("img");
  return (img && img.alt) || `photo-${item.dataset.id}`;
}

function mark(item, on) {
  item.classList.toggle("selected", on);
  if (item.matches(".card")) item.setAttribute("role", "button");
  item.setAttribute("aria-pressed", String(on));
}

function toggle(item, on = !selected.has(item.dataset.id)) {
  if (on) selected.set(item.dataset.id, nameOf(item));
  else selected.delete(item.dataset.id);
  mark(item, on);
}

// Every photo between the anchor and `item` (in page order, in the same grid list) takes the
// anchor's state (as in a mail client's list).
function selectRange(item) {
  const all = [...item.closest(GRIDS).querySelectorAll(ITEMS)];
  const from = anchor ? all.indexOf(anchor) : -1;
  if (from < 0) { toggle(item); return; }
  const to = all.indexOf(item);
  const on = selected.has(anchor.dataset.id);
  for (const el of all.slice(Math.min(from, to), Math.max(from, to) + 1)) toggle(el, on);
}

function choose(item, shift) {
  if (shift) selectRange(item); else toggle(item);
  anchor = item;
  update();
}

export function clearSelection() {
  selected.clear();
  anchor = null;
  for (const item of document.querySelectorAll(ALL_ITEMS)) {
    item.classList.remove("selected");
    item.removeAttribute("aria-pressed");
    if (item.matches(".card")) item.removeAttribute("role");
  }
  update();
}

function update() {
  const bar = $("select-bar");
  const count = selected.size;
  document.body.classList.toggle("selecting", count > 0);
  bar.hidden = count === 0;
  $("select-count").textContent = `${plural(count, "photo")} selected`;
  markShown();
}

// Photos shown again (a new page of results, another month) keep their state.
function markShown() {
  if (!selected.size) return;
  for (const item of document.querySelectorAll(ALL_ITEMS)) {
    if (selected.has(item.dataset.id) && !item.classList.contains("selected")) mark(item, true);
  }
}

// A click of the pointer on the corner circle: not a click made by the keyboard (Enter on a
// photo opens it) or by a script, which carry no pointer position (`detail` 0).
function inCorner(item, event) {
  if (event.detail === 0) return false;
  const box = item.getBoundingClientRect();
  const [x, y] = [event.clientX - box.left, event.clientY - box.top];
  return x >= 0 && y >= 0 && x < CORNER && y < CORNER;
}

async function addTag(event) {
  event.preventDefault();
  const tag = $("select-tag").value.trim();
  if (!tag || !selected.size) return;
  const status = $("select-status");
  status.textContent = "Tagging…";
  try {
    const ids = [...selected.keys()].map(Number);
    const done = await json("/api/tags/add", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids, tag }),
    });
    status.textContent = `Tagged ${plural(done.tagged, "photo")} “${done.tag}”: tag:${/\s/.test(done.tag) ? `"${done.tag}"` : done.tag} finds them.`;
    $("select-tag").value = "";
    document.dispatchEvent(new CustomEvent("clipdex:tags-changed"));
  } catch (e) {
    status.textContent = e.message;
  }
}

// Saves what `response` holds under `name` (a download made in memory: only with a token,
// which a link cannot send).
async function save(response, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

// The originals as one zip, which the server makes as it sends it: without a token a link the
// browser saves straight to disk; with one (a link cannot send it) fetched, then saved.
async function download() {
  const status = $("select-status");
  const ids = [...selected.keys()].map(Number);
  const name = `clipdex-${plural(ids.length, "photo").replace(" ", "-")}.zip`;
  if (!hasToken()) {
    const link = $("select-download-link");
    link.href = `/api/download?ids=${ids.join(",")}`;
    link.download = name;
    link.click();
    status.textContent = `Downloading ${plural(ids.length, "photo")} as ${name}…`;
    return;
  }
  status.textContent = `Preparing ${name}…`;
  try {
    const response = await api("/api/download", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids }),
    });
    await save(response, name);
    status.textContent = `Downloaded ${name}.`;
  } catch (e) {
    status.textContent = e.message;
  }
}

// A link to one original (the detail view's Download): with a token, fetched, then saved.
export function wireDownloadLink(link) {
  link.addEventListener("click", async (event) => {
    if (!hasToken()) return;
    event.preventDefault();
    try {
      await save(await api(link.getAttribute("href")), link.download);
    } catch (e) {
      link.title = e.message;
    }
  });
}

// `request(path, options)`: the page's JSON call; `raw(path)`: its call that returns the
// response; `token()`: the token the page sends, if any.
export function setUpSelection(request, raw, token) {
  json = request;
  api = raw;
  hasToken = () => Boolean(token());
  const bar = document.createElement("section");
  bar.id = "select-bar";
  bar.hidden = true;
  bar.setAttribute("aria-label", "Selected photos");
  bar.innerHTML = `
    <span id="select-count" aria-live="polite"></span>
    <form id="select-tag-form" autocomplete="off">
      <label for="select-tag">Add a tag</label>
      <input id="select-tag" list="tag-list" maxlength="100" placeholder="e.g. holiday">
      <button type="submit">Add</button>
    </form>
    <button id="select-download" type="button">Download</button>
    <a id="select-download-link" hidden tabindex="-1"></a>
    <button id="select-clear" type="button">Clear</button>
    <span id="select-status" role="status"></span>`;
  document.querySelector("main").append(bar);
  $("select-tag-form").addEventListener("submit", addTag);
  $("select-download").addEventListener("click", download);
  $("select-clear").addEventListener("click", () => {
    const last = anchor;
    clearSelection();
    $("select-status").textContent = "";
    if (last && last.isConnected) last.focus();
  });

  // Before the photo's own handlers (which open the detail view).
  document.addEventListener("click", (event) => {
    const item = itemOf(event.target);
    if (!item) return;
    const wanted = selected.size > 0 || event.ctrlKey || event.metaKey || event.shiftKey || inCorner(item, event);
    if (!wanted) return;
    event.preventDefault();
    event.stopPropagation();
    choose(item, event.shiftKey);
  }, true);

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && selected.size && !document.querySelector("dialog[open]")) {
      clearSelection();
      return;
    }
    if (event.key !== " " || event.ctrlKey || event.metaKey || event.altKey) return;
    const item = itemOf(event.target);
    if (!item || event.target !== item) return;
    event.preventDefault();
    event.stopPropagation();
    choose(item, event.shiftKey);
  }, true);
  // A button fires its click on Space's keyup: swallowed, since Space selected on keydown.
  document.addEventListener("keyup", (event) => {
    if (event.key === " " && itemOf(event.target) && event.target === itemOf(event.target)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
  // New photos on the page (more results, another month) show whether they are selected.
  const shown = new MutationObserver(markShown);
  for (const grid of document.querySelectorAll(GRIDS)) shown.observe(grid, { childList: true, subtree: true });
}

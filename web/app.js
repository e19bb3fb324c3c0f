// clipdex web UI: plain ES module, no build step, no request outside this server.
// Talks to the JSON API under /api; when the server has a token, asks for it once and sends
// it as `Authorization: Bearer` on every call (images included, fetched as blobs).

import { showSettings } from "/settings.js";
import { showSetup } from "/setup.js";
import { showJobs } from "/jobs.js";
import { filterChips, loadPersonNames, showFaces, showPeople, wireFaces, wirePeople, withFilter } from "/people.js";
import { attachQueryHelp } from "/query-help.js";
import { setUpDuplicates, addKeepButtons, duplicatesListed } from "/duplicates.js";
import { setUpSelection, wireDownloadLink } from "/select.js";

const PAGE = 40;
const $ = (id) => document.getElementById(id);

const state = {
  query: null,     // {kind: "text", q} | {kind: "image", file} | {kind: "like", id, label}
  results: [],
  loading: false,
  done: false,
  generation: 0,   // bumps on each new search, so late pages of an old one are dropped
  view: "search",  // "search" | "duplicates" | "timeline" | "folders" | "settings" | "jobs" | "people"
  person: null,    // the person whose photos the People page shows, or null: the list
  open: null,      // the id shown in the detail view
};

// ---- API -------------------------------------------------------------------------------

function token() { return localStorage.getItem("clipdex-token"); }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();
attachQueryHelp($("q"), json);

function askToken() {
  const dialog = $("login");
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => {
    $("login-form").addEventListener("submit", () => {
      localStorage.setItem("clipdex-token", $("token").value.trim());
      $("q").focus();
      resolve();
    }, { once: true });
  });
}

// Images: a plain URL without a token; with one, fetched with the header into a blob URL.
async function setImage(img, url) {
  if (!token()) { img.src = url; return; }
  try {
    const blob = await (await api(url)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (e) { img.alt = e.message; }
}

// ---- searching -------------------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  for (const name of ["tag", "under", "after", "before", "kind"]) {
    const value = $(name).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

// The Filters panel's values as chips beside the query's own, so that a filter stays in sight
// with the panel closed (a page of 0 results says why); × clears it and searches again.
const PANEL_LABELS = { tag: "Tag", under: "Folder", after: "After", before: "Before", kind: "Only" };
function panelChips() {
  return [...filters()].map(([name, value]) => {
    const shown = name === "kind" ? `${value}s` : value;
    const li = document.createElement("li");
    li.className = "chip";
    li.dataset.key = name;
    const text = document.createElement("span");
    text.textContent = `${PANEL_LABELS[name]}: ${shown}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove the filter ${PANEL_LABELS[name]}: ${shown}`);
    remove.addEventListener("click", () => {
      $(name).value = "";
      if (state.query && state.query.kind !== "text") startSearch(state.query);
      else searchFor(state.query ? state.query.q : "");
      $("q").focus();
    });
    li.append(text, remove);
    return li;
  });
}

function startSearch(query, push = true) {
  showView("search");
  state.query = query;
  state.results = [];
  state.done = false;
  state.loading = false;
  state.generation += 1;
  cards.clear();
  $("results").replaceChildren();
  $("toolbar").hidden = false;
  $("chips").replaceChildren(...panelChips(), ...(query.kind === "text" ? filterChips(query.q, searchFor) : []));
  setMessage("");
  if (push) remember();
  loadMore();
}

// The server sorts (after cutting at the relevance) when the order is not by relevance: it
// orders every relevant result, not only the pages loaded so far.
const SORTS = { newest: "-date", oldest: "date", name: "name" };

async function fetchPage(offset) {
  const params = filters();
  params.set("k", PAGE);
  params.set("offset", offset);
  const sort = SORTS[$("sort").value];
  if (sort) {
    params.set("sort", sort);
    if (cutoff() > 0) params.set("min_score", cutoff());
  }
  const q = state.query;
  if (q.kind === "text") {
    if (q.q) params.set("q", q.q);
    if (q.q && $("in-text").checked) params.set("in", "text");
    else if (q.q && $("in-captions").checked) params.set("in", "captions");
    else if (q.q && $("crops").checked) params.set("crops", "true");
    else if (q.q && $("rerank").value) params.set("rerank", $("rerank").value);
    return json(`/api/search?${params}`);
  }
  if (q.kind === "like") {
    params.set("id", q.id);
    return json(`/api/search/image?${params}`, { method: "POST" });
  }
  const form = new FormData();
  form.append("image", q.file);
  return json(`/api/search/image?${params}`, { method: "POST", body: form });
}

async function loadMore() {
  if (state.view === "timeline" || state.view === "folders") { loadTimeline(); return; }
  if (!state.query || state.loading || state.done) return;
  if (belowCutoff()) return;
  state.loading = true;
  const generation = state.generation;
  try {
    const page = await fetchPage(state.results.length);
    if (generation !== state.generation) return;
    state.results.push(...page.results);
    state.done = page.results.length < PAGE;
    render(page.took_ms);
  } catch (e) {
    if (generation === state.generation) {
      // An error replaces what an earlier search showed: no stale header over an empty grid.
      if (state.results.length === 0) { $("summary").textContent = ""; $("results").replaceChildren(); }
      setMessage(e.message, true);
      state.done = true;
    }
  } finally {
    if (generation === state.generation) state.loading = false;
  }
  // Keep filling while the sentinel is still on screen.
  if (generation === state.generation && !state.done && sentinelVisible()) loadMore();
}

// A relevance from 0 to 100; 0 means no cut-off.
function cutoff() { const c = parseFloat($("cutoff").value); return c > 0 ? c : -Infinity; }

// Results without a relevance (ranked by caption words) are not cut.
function relevanceOf(hit) { return hit.relevance ?? Infinity; }

// Results come best first: once the last one is under the cut-off, later pages are too.
function belowCutoff() {
  if (SORTS[$("sort").value]) return false; // the server cut them
  const last = state.results[state.results.length - 1];
  return last !== undefined && relevanceOf(last) < cutoff();
}

function sentinelVisible() {
  return $("sentinel").getBoundingClientRect().top < window.innerHeight + 400;
}

// ---- rendering -------------------------------------------------------------------------

function shown() {
  // In the server's order; by relevance, cut here as pages come.
  return state.results.filter((r) => relevanceOf(r) >= cutoff());
}

function describeQuery() {
  const q = state.query;
  if (q.kind === "text") return q.q ? `“${q.q}”` : `tag “${$("tag").value}”`;
  if (q.kind === "like") return `photos like ${q.label}`;
  return `photos like ${q.file.name || "your image"}`;
}

function render(tookMs) {
  const kept = shown();
  const grid = $("results");
  grid.replaceChildren(...kept.map(card));
  justify(grid);
  const more = state.done ? "" : "+";
  const time = tookMs === undefined ? "" : ` · ${tookMs.toFixed(1)} ms`;
  const noun = kept.length === 1 && !more ? "result" : "results";
  $("summary").textContent = `${kept.length}${more} ${noun} for ${describeQuery()}${time}`;
  const below = state.results.length - kept.length;
  if (state.results.length === 0) setMessage("Nothing found.");
  else if (kept.length === 0 && below > 0) {
    const what = below === 1 && !more ? "1 result is" : `${below}${more} results are`;
    setMessage(`${what} below the relevance cut-off: lower it to see them.`);
    $("message").dataset.cutoff = "yes";
  } else if ($("message").dataset.cutoff) setMessage(""); // the cut-off was lowered: all is shown
}

const cards = new Map(); // id → element, so re-sorting keeps loaded thumbnails

function card(hit) {
  let el = cards.get(hit.id);
  if (el) { el.querySelector(".score").textContent = hit.score.toFixed(3); return el; }
  // Not a figure: a selected result is a toggle button, which a figure with a caption cannot be.
  el = document.createElement("div");
  el.className = "card";
  el.dataset.id = hit.id;
  el.tabIndex = 0;
  el.aspect = aspectOf(hit);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.caption || fileName(hit.path);
  img.title = hit.caption ? `${hit.caption}\n${hit.path}` : hit.path;
  const video = hit.kind === "video";
  // A video shows the frame that matched.
  setImage(img, `/api/images/${hit.id}/thumb?size=256${video ? `&time=${hit.time}` : ""}`);
  img.addEventListener("click", () => showDetail(hit.id, hit.region, true, video ? hit.time : undefined));
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  thumb.append(img);
  if (video) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = `▶ ${clock(hit.duration)}`;
    badge.title = `video, ${clock(hit.duration)} long; this frame at ${clock(hit.time)}`;
    thumb.append(badge);
  }
  if (!video && (hit.live_video || hit.motion_video)) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = hit.live_video ? "LIVE" : "MOTION";
    badge.title = hit.live_video ? "Live Photo: plays in the detail view" : "Motion Photo: plays in the detail view";
    thumb.append(badge);
  }
  if (hit.region && hit.width && hit.height) thumb.append(regionBox(hit.region.box, hit.width, hit.height, true));
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.finetuned != null ? hit.finetuned.toFixed(3) : hit.score.toFixed(3);
  if (hit.finetuned !== undefined) score.title = `fine-tuned model: ${hit.finetuned == null ? "unreadable" : hit.finetuned.toFixed(3)}; library model: ${hit.score.toFixed(3)}`;
  if (hit.itm !== undefined) {
    score.textContent = hit.itm != null ? hit.itm.toFixed(3) : hit.score.toFixed(3);
    score.title = `BLIP match: ${hit.itm == null ? "unreadable" : hit.itm.toFixed(3)}; CLIP: ${hit.score.toFixed(3)}`;
  }
  const like = document.createElement("button");
  like.className = "more-like";
  like.type = "button";
  like.textContent = "More like this";
  like.tabIndex = -1; // one tab stop per result: the detail view (Enter) has the same button
  like.addEventListener("click", () => moreLike(hit.id, hit.path));
  if (hit.relevance !== undefined) {
    const relevance = document.createElement("span");
    relevance.className = "relevance";
    relevance.textContent = Math.round(hit.relevance);
    relevance.title = "relevance, 0-100 (calibrated for this library's model)";
    meta.append(relevance);
  }
  meta.append(score);
  if (hit.text) {
    // What the photo's text matched.
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.textContent = hit.text.snippet;
    snippet.title = hit.text.snippet;
    meta.append(snippet);
  }
  thumb.append(like); // shown over the photo on hover and focus
  el.append(thumb, meta);
  cards.set(hit.id, el);
  return el;
}

// A box over an image shown whole ("contain") or filling a square ("cover"), in percent.
function regionBox([x, y, w, h], width, height, cover) {
  let sx = 1 / width, sy = 1 / height, ox = 0, oy = 0;
  if (cover) {
    const scale = Math.max(1 / width, 1 / height);
    sx = sy = scale;
    ox = (1 - width * scale) / 2;
    oy = (1 - height * scale) / 2;
  }
  const clamp = (v) => Math.min(1, Math.max(0, v));
  const left = clamp(ox + x * sx), top = clamp(oy + y * sy);
  const right = clamp(ox + (x + w) * sx), bottom = clamp(oy + (y + h) * sy);
  const box = document.createElement("div");
  box.className = "box";
  box.style.left = `${left * 100}%`;
  box.style.top = `${top * 100}%`;
  box.style.width = `${(right - left) * 100}%`;
  box.style.height = `${(bottom - top) * 100}%`;
  return box;
}

function moreLike(id, path) {
  closeDetailQuietly();
  startSearch({ kind: "like", id, label: path.split("/").pop() });
}

// Closes the detail view without touching the history (a new view is about to be pushed).
function closeDetailQuietly() {
  state.open = null;
  if ($("detail").open) $("detail").close();
}

function setMessage(text, error = false) {
  const m = $("message");
  delete m.dataset.cutoff;
  m.textContent = text;
  m.classList.toggle("error", error);
}

// ---- detail view -----------------------------------------------------------------------

// Seconds as a player shows them: m:ss, or h:mm:ss.
// A byte count for people: KB below a megabyte.
function sizeText(bytes) {
  return bytes < 1e6 ? `${Math.max(1, Math.round(bytes / 1e3))} KB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  const two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

function formatDate(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16);
}

// The photo files every browser shows as they are; others are opened as a JPEG rendition.
const BROWSER_SHOWS = /\.(jpe?g|jfif|png|gif|webp|bmp|svg)$/i;

async function showDetail(id, region, push = true, time = undefined) {
  const dialog = $("detail");
  let image;
  try { image = await json(`/api/images/${id}`); } catch (e) { setMessage(e.message, true); return; }
  const wasOpen = state.open !== null;
  state.open = id;
  // Stepping through results replaces the entry; opening adds one, which Back closes.
  if (push) remember(wasOpen, { opened: true });
  $("detail-image").removeAttribute("src");
  const old = $("detail-box");
  if (region) {
    const box = regionBox(region.box, image.width, image.height, false);
    box.id = "detail-box";
    old.replaceWith(box);
  } else {
    old.hidden = true;
  }
  // A video plays from the moment that matched (a player cannot send the token: then its frame).
  const player = $("detail-video");
  player.pause();
  player.removeAttribute("src");
  const playable = Boolean(image.video) && !token();
  player.hidden = !playable;
  $("detail-image").hidden = playable;
  const at = time ?? image.video?.poster ?? 0;
  if (playable) {
    player.src = `/api/images/${id}/file#t=${at}`;
  } else {
    setImage($("detail-image"), `/api/images/${id}/thumb?size=1024${image.video ? `&time=${at}` : ""}`);
  }
  setMotion(id, image);
  showFaces(peopleContext, image);
  const rows = [
    ["Files", image.paths],
    ["Size", `${image.width} × ${image.height} px, ${(image.size / 1e6).toFixed(2)} MB`],
    ["Date", `${formatDate(image.date)}${image.taken ? " (taken)" : " (file time)"}`],
  ];
  if (image.video) rows.push(["Video", `${clock(image.video.duration)}, ${image.video.codec}${time !== undefined ? `; matched at ${clock(time)}` : ""}`]);
  if (image.live_video) rows.push(["Live Photo", image.live_video_problem ? `${image.live_video} (cannot be played: ${image.live_video_problem})` : image.live_video]);
  if (image.raw_path) rows.push(["RAW", image.raw_path]);
  if (image.motion_video) rows.push(["Motion Photo", `${sizeText(image.motion_video.length)} video`]);
  if (image.motion_video_problem) rows.push(["Motion Photo", `no video: ${image.motion_video_problem}`]);
  if (image.camera) rows.push(["Camera", image.camera]);
  if (image.lens) rows.push(["Lens", image.lens]);
  if (image.place) {
    rows.push(["Place", [image.place.city, image.place.region, image.place.country].filter(Boolean).join(", ")]);
  }
  if (image.gps) rows.push(["Location", `${image.gps[0].toFixed(5)}, ${image.gps[1].toFixed(5)}`]);
  rows.push(["Id", String(image.id)]);
  $("detail-meta").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    // A list (the files) is one line each.
    const dds = (Array.isArray(v) ? v : [v]).map((line) => {
      const dd = document.createElement("dd"); dd.textContent = line; return dd;
    });
    return [dt, ...dds];
  }));
  $("detail-tags").replaceChildren(...image.tags.map((t) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `${t.label} ${(t.probability * 100).toFixed(0)}%`;
    b.addEventListener("click", () => { closeDetailQuietly(); $("tag").value = t.label; $("q").value = ""; startSearch({ kind: "text", q: "" }); });
    return b;
  }));
  $("detail-caption").textContent = image.caption || "";
  $("detail-caption-now").hidden = Boolean(image.caption);
  // The text read in the photo; pointing at a line shows its box.
  $("detail-text").replaceChildren(...(image.text || []).map((line) => {
    const li = document.createElement("li");
    li.textContent = line.text;
    const xs = line.box.map((p) => p[0]), ys = line.box.map((p) => p[1]);
    const [x, y] = [Math.min(...xs), Math.min(...ys)];
    const rect = [x, y, Math.max(...xs) - x, Math.max(...ys) - y];
    li.addEventListener("mouseenter", () => {
      const box = regionBox(rect, image.width, image.height, false);
      box.id = "detail-box";
      $("detail-box").replaceWith(box);
    });
    li.addEventListener("mouseleave", () => { $("detail-box").hidden = true; });
    return li;
  }));
  $("ask-answer").textContent = "";
  $("ask-question").value = "";
  $("detail-like").onclick = () => moreLike(id, image.paths[0] || String(id));
  const open = $("detail-open");
  open.hidden = Boolean(token()); // a new tab cannot send the token
  // A file a browser cannot show (HEIC, RAW, JPEG XL, AVIF in some browsers) opens as the
  // server's JPEG rendition of it; the rest as the original.
  const rendition = !image.video && image.paths.length > 0 && !BROWSER_SHOWS.test(image.paths[0]);
  open.textContent = rendition ? "Open full size (JPEG)" : "Open original";
  open.href = `/api/images/${id}/file${rendition ? "?format=jpeg" : ""}`;
  const save = $("detail-download");
  save.href = `/api/images/${id}/file`;
  save.download = (image.paths[0] || "").split("/").pop() || `photo-${id}`;
  if (!dialog.open) dialog.showModal();
}

// A Live Photo's or Motion Photo's video: it plays while the photo or the play badge is
// pressed and held (as phone galleries do), or while Space/Enter is held on the badge; a
// click on the badge without holding plays it once through. A player cannot send the token.
function setMotion(id, image) {
  const motion = $("detail-motion"), badge = $("detail-play");
  stopMotion();
  motion.removeAttribute("src");
  // A Live Photo whose MOV is unreadable or not a movie has nothing to play (the details say why).
  const live = image.live_video && !image.live_video_problem;
  const kind = live ? "live" : image.motion_video ? "motion" : null;
  const playable = kind !== null && !image.video && !token();
  badge.hidden = !playable;
  if (!playable) return;
  badge.textContent = kind === "live" ? "▶ LIVE" : "▶ MOTION";
  badge.title = `${kind === "live" ? "Live Photo" : "Motion Photo"}: press and hold (or hold Space) to play`;
  motion.dataset.src = `/api/images/${id}/${kind}`;
}

function playMotion(loop) {
  const motion = $("detail-motion");
  if ($("detail-play").hidden || !motion.dataset.src) return;
  if (!motion.getAttribute("src")) motion.src = motion.dataset.src;
  motion.loop = loop;
  motion.currentTime = 0;
  motion.hidden = false;
  $("detail-play").setAttribute("aria-pressed", "true");
  motion.play().catch(() => stopMotion());
}

function stopMotion() {
  const motion = $("detail-motion");
  motion.pause();
  motion.hidden = true;
  $("detail-play").setAttribute("aria-pressed", "false");
}

{
  const badge = $("detail-play"), frame = $("detail-image");
  // held: null, a timer (pressed, not yet playing) or "playing"; after a hold or a held key
  // the click that follows does not start the video again.
  let held = null, suppressClick = false;
  const press = (event) => {
    if (badge.hidden || (event.button !== undefined && event.button !== 0)) return;
    event.currentTarget.setPointerCapture?.(event.pointerId);
    held = setTimeout(() => { held = "playing"; playMotion(true); }, 250);
  };
  const release = () => {
    if (held === "playing") { stopMotion(); suppressClick = true; } else if (held !== null) clearTimeout(held);
    held = null;
  };
  for (const el of [badge, frame]) {
    el.addEventListener("pointerdown", press);
    el.addEventListener("pointerup", release);
    el.addEventListener("pointerleave", release);
    el.addEventListener("pointercancel", release);
    el.addEventListener("contextmenu", (event) => { if (!badge.hidden) event.preventDefault(); });
  }
  // A short click on the badge (mouse, touch or keyboard without holding) plays once.
  badge.addEventListener("click", () => {
    if (suppressClick) { suppressClick = false; return; }
    if (held === null && $("detail-motion").hidden) playMotion(false);
  });
  badge.addEventListener("keydown", (event) => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) { event.preventDefault(); playMotion(true); }
  });
  badge.addEventListener("keyup", (event) => {
    if (event.key === " " || event.key === "Enter") { event.preventDefault(); stopMotion(); suppressClick = true; }
  });
  $("detail-motion").addEventListener("ended", stopMotion);
}

// Questions about the open photo (BLIP VQA) and a caption made on request.
$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = state.open, question = $("ask-question").value.trim();
  if (id === null || !question) return;
  $("ask-answer").textContent = "…";
  try {
    const { answer } = await json(`/api/images/${id}/ask`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
    });
    if (state.open === id) $("ask-answer").textContent = answer;
  } catch (e) { if (state.open === id) $("ask-answer").textContent = e.message; }
});

$("detail-caption-now").addEventListener("click", async () => {
  const id = state.open;
  if (id === null) return;
  $("detail-caption").textContent = "…";
  try {
    const { caption } = await json(`/api/images/${id}/caption`, { method: "POST" });
    if (state.open === id) { $("detail-caption").textContent = caption; $("detail-caption-now").hidden = true; }
  } catch (e) { if (state.open === id) $("detail-caption").textContent = e.message; }
});

// The detail view closes (Esc, ×, More like this): Back undoes the opening when we added it.
$("detail").addEventListener("close", () => {
  $("detail-video").pause();
  stopMotion();
  if (state.open === null) return;
  state.open = null;
  if (history.state && history.state.opened) history.back();
  else remember(true);
});

// The neighbour of the open photo among the results shown, for the arrow keys.
function stepDetail(delta) {
  const browsing = state.view === "timeline" || state.view === "folders";
  const ids = browsing ? timeline.items.map((i) => i.id) : shown().map((r) => r.id);
  const at = ids.indexOf(state.open);
  if (at < 0) return;
  const next = ids[at + delta];
  if (next !== undefined) {
    const hit = state.results.find((r) => r.id === next);
    showDetail(next, hit && hit.region, true, hit && hit.kind === "video" ? hit.time : undefined);
  }
}

// ---- status ----------------------------------------------------------------------------

async function pollStatus() {
  try {
    const s = await json("/api/status");
    const lib = s.library, ix = s.indexer;
    let text = `${lib.images} photos`;
    if (ix.state === "indexing") text += ` · indexing ${ix.done} / ${ix.total}`;
    else if (ix.state === "starting") text += " · loading the model";
    else if (ix.state === "watching") text += " · up to date";
    else if (ix.state === "no_folders") text += " · no folders yet (clipdex add FOLDER)";
    else if (ix.state === "failed") text += ` · indexing failed: ${ix.last_error}`;
    else if (ix.state === "paused") text += " · background jobs off (Settings)";
    else if (ix.state === "waiting_for_model") text += " · waiting for a model";
    showSetup(ix);
    const st = s.stages || {};
    for (const [name, label] of [["captioning", "captioning"], ["thumbnails", "thumbnails"]]) {
      const p = st[name];
      if (p && p.total && p.done < p.total && ix.state === "watching") text += ` · ${label} ${p.done} / ${p.total}`;
    }
    // A Live Photo's broken MOV is a problem of its photo (the details say it), not a file
    // that could not be read; links leading out of the folders are skipped, not unreadable.
    const unreadable = lib.unreadable ?? lib.failures;
    if (lib.skipped_links) text += ` · ${lib.skipped_links} links outside the folders skipped`;
    $("status").textContent = text;
    if (unreadable) {
      // The failures, with why, are in the Jobs view.
      const link = document.createElement("a");
      link.href = "?view=jobs";
      link.id = "failures-link";
      link.textContent = `${unreadable} unreadable`;
      link.addEventListener("click", (event) => { event.preventDefault(); openJobs(); });
      $("status").append(" · ", link);
    }
    showRerankers(s.finetuned || []);
  } catch (e) {
    $("status").textContent = `status unavailable: ${e.message}`;
  }
  setTimeout(pollStatus, 2000);
}

// Re-rankers: BLIP's image-text matching always, and the fine-tuned models the server
// registered (serve --finetuned NAME=DIR).
function showRerankers(names) {
  const select = $("rerank");
  const values = ["itm", ...names.map((n) => `clip:${n}`)];
  const known = [...select.options].map((o) => o.value).filter(Boolean);
  if (known.join("\n") === values.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(new Option("—", ""), new Option("BLIP image–text matching", "itm"),
    ...names.map((n) => new Option(`fine-tuned: ${n}`, `clip:${n}`)));
  select.value = values.includes(chosen) ? chosen : values.includes(wantedRerank) ? wantedRerank : "";
}

async function loadTags() {
  try {
    const { tags } = await json("/api/tags");
    $("tag-list").replaceChildren(...tags.slice(0, 500).map((t) => {
      const o = document.createElement("option");
      o.value = t.label;
      o.label = `${t.label} (${t.count})`;
      return o;
    }));
  } catch { /* tags are optional */ }
}

async function loadPlaces() {
  try {
    const { places } = await json("/api/places");
    $("place-list").replaceChildren(...places.slice(0, 500).map((p) => {
      const o = document.createElement("option");
      o.value = p.city;
      o.label = `${[p.city, p.region, p.country].filter(Boolean).join(", ")} (${p.count})`;
      return o;
    }));
  } catch { /* places are optional */ }
}

// The query with its place: filters replaced by `place` (unchanged when it is empty): the place
// filter lives in the query, so the URL, the API and the CLI read it alike.
function withPlace(q, place) {
  if (!place) return q;
  const rest = q.replace(/(^|\s)place:("[^"]*"|\S+)/g, " ").replace(/\s+/g, " ").trim();
  const value = /[\s"]/.test(place) ? `"${place.replace(/(["\\])/g, "\\$1")}"` : place;
  return `${rest} place:${value}`.trim();
}

// ---- the URL ---------------------------------------------------------------------------
// The search (query or "like" id, filters, sort, options), the page and the open photo live in
// the URL, so Back and Forward walk through them and a link reopens the same view. A search by
// an uploaded image is the one thing a URL cannot hold: it keeps the previous address.

let wantedRerank = "";

function viewParams() {
  const p = new URLSearchParams();
  if (["duplicates", "settings", "jobs"].includes(state.view)) {
    p.set("view", state.view);
  } else if (state.view === "people") {
    p.set("view", "people");
    if (state.person !== null) p.set("person", state.person);
  } else if (state.view === "folders") {
    p.set("view", "folders");
    if (timeline.folder) p.set("path", timeline.folder);
  } else if (state.query) {
    const q = state.query;
    if (q.kind === "text" && q.q) p.set("q", q.q);
    if (q.kind === "like") p.set("like", q.id);
    for (const [k, v] of filters()) p.set(k, v);
    if ($("sort").value !== "relevance") p.set("sort", $("sort").value);
    // Always: a link keeps its cut-off even where the default differs.
    p.set("min", $("cutoff").value);
    if ($("in-text").checked) p.set("in", "text");
    else if ($("in-captions").checked) p.set("in", "captions");
    else if ($("crops").checked) p.set("crops", "1");
    else if ($("rerank").value) p.set("rerank", $("rerank").value);
  }
  return p;
}

function remember(replace = false, marker = null) {
  if (state.view === "search" && state.query && state.query.kind === "image") return;
  const p = viewParams();
  if (state.open !== null) p.set("open", state.open);
  const url = p.toString() ? `?${p}` : location.pathname;
  if (url === (location.search || location.pathname) && !marker) return;
  history[replace ? "replaceState" : "pushState"](marker, "", url);
}

// What the address asks for; only what changed is redone (a photo opened or closed over the
// same search does not search again).
function restoreFromUrl() {
  const p = new URLSearchParams(location.search);
  const open = p.get("open");
  p.delete("open");
  const same = p.toString() === viewParams().toString() && (state.query || state.view !== "search");
  if (!same) {
    for (const name of ["tag", "under", "after", "before"]) $(name).value = p.get(name) || "";
    $("kind").value = ["photo", "video"].includes(p.get("kind")) ? p.get("kind") : "";
    $("sort").value = ["newest", "oldest", "name"].includes(p.get("sort")) ? p.get("sort") : "relevance";
    const min = /^\d+$/.test(p.get("min") || "") ? Math.min(Number(p.get("min")), 100) : Number($("cutoff").defaultValue);
    $("cutoff").value = min;
    $("cutoff-value").textContent = min > 0 ? String(min) : "off";
    $("in-captions").checked = p.get("in") === "captions";
    $("in-text").checked = p.get("in") === "text";
    $("crops").checked = p.get("crops") === "1";
    wantedRerank = p.get("rerank") || "";
    if ([...$("rerank").options].some((o) => o.value === wantedRerank)) $("rerank").value = wantedRerank;
    if (p.get("view") === "duplicates") {
      showDuplicates(false);
    } else if (p.get("view") === "settings") {
      openSettings(false);
    } else if (p.get("view") === "jobs") {
      openJobs(false);
    } else if (p.get("view") === "people") {
      openPeople(false, /^\d+$/.test(p.get("person") || "") ? Number(p.get("person")) : null);
    } else if (p.get("view") === "folders") {
      const path = p.get("path") || "";
      startTimeline("folders", path.startsWith("/") ? path : null, null, false);
    } else if (/^\d+$/.test(p.get("like") || "")) {
      $("q").value = "";
      startSearch({ kind: "like", id: Number(p.get("like")), label: `photo ${p.get("like")}` }, false);
    } else if (p.get("q") || p.get("tag")) {
      $("q").value = p.get("q") || "";
      startSearch({ kind: "text", q: $("q").value.trim() }, false);
    } else {
      goHome();
    }
  }
  if (open && /^\d+$/.test(open)) {
    if (state.open !== Number(open)) showDetail(Number(open), undefined, false);
  } else if ($("detail").open) {
    closeDetailQuietly(); // the history already moved
  }
}

function goHome() {
  $("q").value = "";
  startTimeline("timeline", null, null, false);
}

window.addEventListener("popstate", restoreFromUrl);

// ---- keyboard --------------------------------------------------------------------------
// Arrows move through the results (Enter opens one); in the detail view they step to the
// previous or next result; Esc closes it (the dialog's own behaviour).

function gridNeighbour(card, key) {
  const all = [...$("results").querySelectorAll(".card")];
  const at = all.indexOf(card);
  if (key === "ArrowRight") return all[at + 1];
  if (key === "ArrowLeft") return all[at - 1];
  const top = card.offsetTop;
  const columns = all.filter((c) => c.offsetTop === top).length || 1;
  return all[at + (key === "ArrowDown" ? columns : -columns)];
}

$("timeline-groups").addEventListener("keydown", (event) => {
  const tile = event.target.closest(".tile");
  if (!tile || !["ArrowRight", "ArrowLeft", "ArrowDown", "ArrowUp"].includes(event.key)) return;
  const next = tileNeighbour(tile, event.key);
  if (next) { event.preventDefault(); next.focus(); }
});

$("results").addEventListener("keydown", (event) => {
  const card = event.target.closest(".card");
  if (!card) return;
  if (event.key === "Enter" && event.target === card) {
    const hit = state.results.find((r) => String(r.id) === card.dataset.id);
    showDetail(Number(card.dataset.id), hit && hit.region);
  } else if (["ArrowRight", "ArrowLeft", "ArrowDown", "ArrowUp"].includes(event.key)) {
    const next = gridNeighbour(card, event.key);
    if (next) { event.preventDefault(); next.focus(); }
  }
});

$("detail").addEventListener("keydown", (event) => {
  if (event.key === "ArrowRight") { event.preventDefault(); stepDetail(1); }
  if (event.key === "ArrowLeft") { event.preventDefault(); stepDetail(-1); }
});

// ---- browsing: the timeline and the folders ----------------------------------------------
// The home page is the library newest first (GET /api/timeline, a page at a time as the user
// scrolls), grouped by month, with a month scrubber; the Folders view lists the library's
// folders and shows the timeline of the one chosen. Photos are laid out in justified rows.

const TIMELINE_PAGE = 50;

const timeline = {
  folder: null,    // the folder shown (Folders view), or null
  start: null,     // the month the timeline was opened at (the scrubber), or null: the newest
  cursor: null,    // where the next page starts
  done: false,
  loading: false,
  items: [],
  generation: 0,
};

function fileName(path) { return String(path).split("/").pop(); }

function aspectOf(item) { return item.width > 0 && item.height > 0 ? item.width / item.height : 1; }

// "2024-05" as "May 2024".
function monthLabel(month) {
  const [y, m] = month.split("-").map(Number);
  if (!y || !m) return "Undated";
  return new Date(Date.UTC(y, m - 1, 1)).toLocaleDateString("en", { month: "long", year: "numeric", timeZone: "UTC" });
}

// Opens the timeline (view "timeline") or a folder (view "folders", folder null: the list of
// the library's folders), from the newest item or from `month`.
function startTimeline(view, folder, month, push = true) {
  closeDetailQuietly();
  showView(view);
  Object.assign(timeline, { folder, start: month, cursor: null, done: false, loading: false, items: [] });
  timeline.generation += 1;
  state.generation += 1;
  $("timeline-groups").replaceChildren();
  $("timeline-newest").hidden = !month;
  if (push) remember();
  if (view === "folders") showFolders(folder);
  // The list of folders alone has no photos of its own to show.
  const photos = view === "timeline" || folder !== null;
  $("scrubber").hidden = !photos;
  if (!photos) { timeline.done = true; return; }
  if (!month) loadScrubber();
  loadTimeline();
}

async function loadTimeline() {
  if (timeline.loading || timeline.done) return;
  timeline.loading = true;
  const generation = timeline.generation;
  const params = new URLSearchParams({ limit: TIMELINE_PAGE });
  if (timeline.cursor) params.set("cursor", timeline.cursor);
  else if (timeline.start) params.set("month", timeline.start);
  if (timeline.folder) params.set("folder", timeline.folder);
  try {
    const page = await json(`/api/timeline?${params}`);
    if (generation !== timeline.generation) return;
    timeline.cursor = page.next;
    timeline.done = !page.next;
    timeline.items.push(...page.items);
    addToTimeline(page.items);
    if (timeline.items.length === 0) {
      setMessage(timeline.folder ? "No photos in this folder." : "No photos yet: add a folder (clipdex add FOLDER), and they appear here as they are indexed.");
    }
  } catch (e) {
    if (generation === timeline.generation) { setMessage(e.message, true); timeline.done = true; }
  } finally {
    if (generation === timeline.generation) timeline.loading = false;
  }
  if (generation === timeline.generation && !timeline.done && sentinelVisible()) loadTimeline();
}

// Adds items to their month's group (made when first needed) and lays out the groups touched.
function addToTimeline(items) {
  const touched = new Set();
  for (const item of items) {
    let group = $("timeline-groups").querySelector(`section[data-month="${item.month}"]`);
    if (!group) {
      group = document.createElement("section");
      group.className = "month";
      group.dataset.month = item.month;
      group.id = `month-${item.month}`;
      const title = document.createElement("h2");
      title.textContent = monthLabel(item.month);
      const grid = document.createElement("div");
      grid.className = "justified";
      group.append(title, grid);
      $("timeline-groups").append(group);
    }
    group.lastChild.append(tile(item));
    touched.add(group.lastChild);
  }
  for (const grid of touched) justify(grid);
}

// One photo of the timeline: a button (one tab stop) that opens the detail view.
function tile(item) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "tile";
  el.dataset.id = item.id;
  el.aspect = aspectOf(item);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = item.caption || fileName(item.path);
  img.title = `${item.caption ? `${item.caption}\n` : ""}${item.path}\n${formatDate(item.date)}`;
  setImage(img, `/api/images/${item.id}/thumb?size=256`);
  // Once laid out: a tile larger than the small thumbnail (on screen pixels) gets the large one.
  el.shownAt = (side) => {
    if (side * (window.devicePixelRatio || 1) > 320 && !el.large) {
      el.large = true;
      setImage(img, `/api/images/${item.id}/thumb?size=1024`);
    }
  };
  el.append(img);
  if (item.kind === "video") {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = `▶ ${clock(item.duration)}`;
    el.append(badge);
  }
  el.addEventListener("click", () => showDetail(item.id));
  return el;
}

// Justified rows: each row's photos keep their aspect ratios, share one height and fill the
// width. A row ends where its height at full width comes nearest the target height (a phone's
// rows hold 3 or 4 photos whatever their shapes); the last row keeps the target height rather
// than stretch. Tiles carry their aspect ratio (`aspect`).
function justify(grid) {
  const tiles = [...grid.children].filter((t) => t.aspect);
  const width = grid.clientWidth - 1; // sub-pixel widths must never sum past the line
  if (width <= 0 || tiles.length === 0) return;
  const gap = parseFloat(getComputedStyle(grid).columnGap) || 0;
  // About three 4:3 photos a row on a phone, rows of at most 220 px on a desktop.
  const target = Math.max(90, Math.min(220, width / 3.4));
  const [least, most] = width < 600 ? [3, 4] : [1, Infinity];
  const heightOf = (n, ratios) => (width - gap * (n - 1)) / ratios;
  const place = (row, height) => {
    for (const t of row) {
      t.style.width = `${t.aspect * height}px`;
      t.style.setProperty("--row-height", `${height}px`);
      if (t.shownAt) t.shownAt(Math.max(t.aspect * height, height));
    }
  };
  let row = [], ratios = 0;
  for (const t of tiles) {
    row.push(t);
    ratios += t.aspect;
    const height = heightOf(row.length, ratios);
    if (row.length < most && (row.length < least || height > target)) continue;
    const without = heightOf(row.length - 1, ratios - t.aspect);
    if (row.length > least && row.length < most && Math.abs(without - target) < Math.abs(height - target)) {
      place(row.slice(0, -1), without);
      row = [t];
      ratios = t.aspect;
    } else {
      place(row, height);
      row = [];
      ratios = 0;
    }
  }
  place(row, target);
}

function justifyAll() {
  if (!$("results").hidden) justify($("results"));
  if (!$("timeline").hidden) $("timeline-groups").querySelectorAll(".justified").forEach(justify);
}

let resizeFrame = 0;
new ResizeObserver(() => {
  cancelAnimationFrame(resizeFrame);
  resizeFrame = requestAnimationFrame(justifyAll);
}).observe(document.querySelector("main"));

// The neighbour of a tile in the timeline: across month groups, by position on screen.
function tileNeighbour(tile, key) {
  const all = [...$("timeline-groups").querySelectorAll(".tile")];
  const at = all.indexOf(tile);
  if (key === "ArrowRight") return all[at + 1];
  if (key === "ArrowLeft") return all[at - 1];
  const box = tile.getBoundingClientRect(), middle = box.left + box.width / 2;
  const rows = key === "ArrowDown" ? all.slice(at + 1).filter((t) => t.getBoundingClientRect().top > box.top + 1)
    : all.slice(0, at).reverse().filter((t) => t.getBoundingClientRect().top < box.top - 1);
  if (rows.length === 0) return undefined;
  const rowTop = rows[0].getBoundingClientRect().top;
  const row = rows.filter((t) => Math.abs(t.getBoundingClientRect().top - rowTop) < 1);
  const distance = (t) => { const b = t.getBoundingClientRect(); return Math.abs(b.left + b.width / 2 - middle); };
  return row.reduce((best, t) => (distance(t) < distance(best) ? t : best));
}

// The scrubber: every month with its count; choosing one scrolls to it when it is loaded, or
// reopens the timeline at it.
async function loadScrubber() {
  const generation = timeline.generation;
  const params = new URLSearchParams();
  if (timeline.folder) params.set("folder", timeline.folder);
  let months;
  try { ({ months } = await json(`/api/timeline/months?${params}`)); } catch { return; }
  if (generation !== timeline.generation) return;
  let year = null;
  $("scrubber").replaceChildren(...months.flatMap(({ month, count }) => {
    const out = [];
    if (month.slice(0, 4) !== year) {
      year = month.slice(0, 4);
      const y = document.createElement("span");
      y.className = "year";
      y.textContent = month === "0000-00" ? "Undated" : year;
      out.push(y);
    }
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.dataset.month = month;
    b.textContent = month === "0000-00" ? "?" : monthLabel(month).split(" ")[0].slice(0, 3);
    b.title = `${monthLabel(month)}: ${count} photo${count === 1 ? "" : "s"}`;
    // The name starts with the text shown (a voice user says what they see).
    b.setAttribute("aria-label", `${b.textContent} (${b.title})`);
    b.addEventListener("click", () => jumpToMonth(month));
    out.push(b);
    return out;
  }));
}

function jumpToMonth(month) {
  const group = document.getElementById(`month-${month}`);
  if (group) { group.scrollIntoView(); group.querySelector(".tile")?.focus({ preventScroll: true }); return; }
  const scrubber = $("scrubber").cloneNode(true);
  startTimeline(state.view, timeline.folder, month, false);
  // The months stay the same: keep the scrubber (its buttons rewired).
  scrubber.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => jumpToMonth(b.dataset.month)));
  $("scrubber").replaceWith(scrubber);
  scrubber.hidden = false;
}

// The Folders view's folder list and path.
let libraryRoots = null;

async function showFolders(folder) {
  const generation = timeline.generation;
  const params = new URLSearchParams();
  if (folder) params.set("path", folder);
  let listing;
  try {
    listing = await json(`/api/folders?${params}`);
    if (!libraryRoots) libraryRoots = folder ? (await json("/api/folders")).folders.map((f) => f.path) : listing.folders.map((f) => f.path);
  } catch (e) { if (generation === timeline.generation) setMessage(e.message, true); return; }
  if (generation !== timeline.generation) return;
  const link = (label, path) => {
    const a = document.createElement("a");
    a.href = path ? `?${new URLSearchParams({ view: "folders", path })}` : "?view=folders";
    a.textContent = label;
    a.addEventListener("click", (event) => { event.preventDefault(); startTimeline("folders", path, null); });
    return a;
  };
  const crumbs = [link("All folders", null)];
  if (folder) {
    const root = libraryRoots.filter((r) => folder === r || folder.startsWith(`${r.replace(/\/$/, "")}/`)).sort((a, b) => b.length - a.length)[0] || folder;
    crumbs.push(link(root, root));
    let path = root.replace(/\/$/, "");
    for (const part of folder.slice(root.length).split("/").filter(Boolean)) {
      path = `${path}/${part}`;
      crumbs.push(link(part, path));
    }
    crumbs[crumbs.length - 1].setAttribute("aria-current", "page");
  }
  $("crumbs").replaceChildren(...crumbs.flatMap((c, i) => (i ? [document.createTextNode(" › "), c] : [c])));
  $("folder-list").replaceChildren(...listing.folders.map((f) => {
    const li = document.createElement("li");
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = `${f.photos} photo${f.photos === 1 ? "" : "s"}`;
    li.append(link(f.name, f.path), " ", count);
    return li;
  }));
  if (!listing.folders.length && !folder) setMessage("No folders yet: add one with clipdex add FOLDER.");
}

// ---- duplicates ------------------------------------------------------------------------

function showView(view) {
  state.view = view;
  const duplicates = view === "duplicates", browsing = view === "timeline" || view === "folders";
  $("duplicates").hidden = !duplicates;
  $("settings").hidden = view !== "settings";
  $("jobs").hidden = view !== "jobs";
  $("people").hidden = view !== "people";
  $("results").hidden = view !== "search";
  $("timeline").hidden = !browsing;
  $("folder-bar").hidden = view !== "folders";
  if (view !== "search") { $("toolbar").hidden = true; setMessage(""); }
  if (view !== "search") state.query = null;
  for (const [link, shows] of [["photos-link", "timeline"], ["folders-link", "folders"], ["settings-link", "settings"], ["jobs-link", "jobs"], ["people-link", "people"]]) {
    if (view === shows) $(link).setAttribute("aria-current", "page");
    else $(link).removeAttribute("aria-current");
  }
}

async function showDuplicates(push = true) {
  closeDetailQuietly();
  showView("duplicates");
  if (push) remember();
  $("dup-groups").replaceChildren();
  $("dup-summary").textContent = "Looking for near-duplicates…";
  let report;
  try { report = await json("/api/duplicates"); } catch (e) { $("dup-summary").textContent = e.message; return; }
  if (state.view !== "duplicates") return;
  $("dup-groups").replaceChildren(...report.groups.map(duplicateGroup));
  duplicatesListed(report.groups.length);
  summariseDuplicates();
}

function summariseDuplicates() {
  const groups = $("dup-groups").children.length;
  $("dup-summary").textContent = groups
    ? `${groups} group${groups === 1 ? "" : "s"} of near-duplicates; the suggested photo to keep comes first. "Keep this one" moves the group's other photos out of the library (clipdex deletes nothing; Undo puts them back).`
    : "No near-duplicates found.";
}

function fileSize(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

function duplicateGroup(group) {
  const el = document.createElement("section");
  el.className = "dup-group";
  const head = document.createElement("div");
  head.className = "dup-head";
  const title = document.createElement("span");
  title.textContent = `${group.images.length} photos · similarity ${group.similarity.toFixed(3)}`;
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "dismiss";
  dismiss.textContent = "Not duplicates";
  dismiss.addEventListener("click", async () => {
    dismiss.disabled = true;
    try {
      await json("/api/duplicates/dismiss", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: group.images.map((i) => i.id) }),
      });
      el.remove();
      duplicatesListed($("dup-groups").children.length);
      summariseDuplicates();
    } catch (e) { dismiss.disabled = false; title.textContent = e.message; }
  });
  head.append(title, dismiss);
  const row = document.createElement("div");
  row.className = "dup-row";
  row.append(...group.images.map((image) => {
    const fig = document.createElement("figure");
    fig.className = "card";
    fig.dataset.id = image.id;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = fileName(image.path);
    img.title = image.path;
    setImage(img, `/api/images/${image.id}/thumb?size=256`);
    img.addEventListener("click", () => showDetail(image.id));
    const meta = document.createElement("figcaption");
    meta.className = "meta dup-meta";
    const name = image.path.split("/").pop();
    meta.textContent = `${image.id === group.keep ? "keep · " : ""}${image.width} × ${image.height} · ${fileSize(image.size)} · ${formatDate(image.date).slice(0, 10)} · ${name}`;
    if (image.id === group.keep) fig.classList.add("keep");
    fig.append(img, meta);
    return fig;
  }));
  el.append(head, row);
  addKeepButtons(group, el);
  return el;
}

$("photos-link").addEventListener("click", (event) => {
  event.preventDefault();
  closeDetailQuietly();
  $("q").value = "";
  startTimeline("timeline", null, null);
});

$("folders-link").addEventListener("click", (event) => {
  event.preventDefault();
  closeDetailQuietly();
  startTimeline("folders", null, null);
});

$("timeline-newest").addEventListener("click", () => startTimeline(state.view, timeline.folder, null, false));

function openSettings(push = true) {
  closeDetailQuietly();
  showView("settings");
  if (push) remember();
  showSettings(json, $("settings-form"), $("settings-message"));
}

function openJobs(push = true) {
  closeDetailQuietly();
  showView("jobs");
  if (push) remember();
  showJobs(json, () => state.view === "jobs");
}

// The People page (people.js): the list, or one person's photos.
function openPeople(push = true, person = null) {
  closeDetailQuietly();
  showView("people");
  state.person = person;
  if (push) remember();
  showPeople(peopleContext, person);
}

// A text search for `q`, as if typed (the detail view closes); nothing left to search for (the
// last chip removed): the timeline.
function searchFor(q) {
  closeDetailQuietly();
  $("q").value = q;
  if (!q && !$("tag").value.trim()) startTimeline("timeline", null, null);
  else startSearch({ kind: "text", q });
}

const peopleContext = {
  json,
  setImage,
  search: searchFor,
  openPeople: (person) => openPeople(true, person),
  openPhoto: (id) => showDetail(id),
  shown: () => state.view === "people",
};

$("people-link").addEventListener("click", (event) => {
  event.preventDefault();
  openPeople();
});
wirePeople(peopleContext);
wireFaces();

$("jobs-link").addEventListener("click", (event) => {
  event.preventDefault();
  openJobs();
});

$("settings-link").addEventListener("click", (event) => {
  event.preventDefault();
  openSettings();
});

$("duplicates-link").addEventListener("click", (event) => {
  event.preventDefault();
  showDuplicates();
});

// ---- wiring ----------------------------------------------------------------------------

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = withFilter(withPlace($("q").value.trim(), $("place").value.trim()), "person", $("person").value.trim());
  $("q").value = q;
  $("place").value = "";
  $("person").value = "";
  if (!q && !$("tag").value.trim()) { $("q").focus(); return; }
  startSearch({ kind: "text", q });
});

// A button, so that the keyboard reaches it (a label around a hidden input is no tab stop).
$("image-button").addEventListener("click", () => $("image-input").click());

// `/` goes to the search box from anywhere but a text field (as on GitHub, YouTube, Gmail).
document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
  if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable], dialog")) return;
  event.preventDefault();
  $("q").focus();
  $("q").select();
});

$("image-input").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) startSearch({ kind: "image", file });
  event.target.value = "";
});

// Another order, or another cut-off under it, is a new search (the server orders what passes).
function searchAgain() {
  if (state.query) startSearch(state.query, false);
  remember(true);
}
$("sort").addEventListener("change", searchAgain);
$("cutoff").addEventListener("input", () => {
  $("cutoff-value").textContent = cutoff() > 0 ? String(cutoff()) : "off";
  if (SORTS[$("sort").value]) return; // searched again on "change"
  render();
  loadMore();
});
$("cutoff").addEventListener("change", () => { if (SORTS[$("sort").value]) searchAgain(); else remember(true); });

new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) loadMore();
}, { rootMargin: "400px" }).observe($("sentinel"));

let dragDepth = 0;
window.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth += 1; $("drop").hidden = false; });
window.addEventListener("dragleave", () => { dragDepth -= 1; if (dragDepth <= 0) { dragDepth = 0; $("drop").hidden = true; } });
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/")) || e.dataTransfer.files[0];
  if (file) startSearch({ kind: "image", file });
});

setUpDuplicates(json, () => showDuplicates(false));
document.addEventListener("clipdex:duplicates-changed", summariseDuplicates);
setUpSelection(json, api, token);
wireDownloadLink($("detail-download"));
document.addEventListener("clipdex:tags-changed", loadTags);
pollStatus();
loadTags();
loadPlaces();
loadPersonNames(peopleContext);
$("person").addEventListener("change", () => { if ($("person").value.trim()) $("search").requestSubmit(); });
$("place").addEventListener("change", () => { if ($("place").value.trim()) $("search").requestSubmit(); });
restoreFromUrl();
$("rerank").addEventListener("change", () => {
  if (state.query && state.query.kind === "text" && state.query.q) startSearch(state.query);
});

// People: the People page (GET /api/people: one face per person, its name and photo count;
// rename inline, hide, merge the selected), one person's photos, the faces in the detail view
// (boxes with names, "not this person") and the person: chips of a search.
//
// app.js hands every function a context:
//   json(path, options)   the UI's API call (token, errors)
//   setImage(img, url)     an image fetched with the token when there is one
//   search(q)              starts a text search for the query q
//   openPeople(id)         opens the People page (id: one person's photos, or null: the list)
//   openPhoto(id)          opens a photo in the detail view
//   shown()                whether the People page is still the view shown

const $ = (id) => document.getElementById(id);

// A query value: bare when it can be, else in double quotes (the query syntax's escapes).
export function quoted(value) {
  return /^[^\s"\\]+$/.test(value) ? value : `"${value.replace(/(["\\])/g, "\\$1")}"`;
}

// A person's name as shown: the name, or "Unnamed".
function label(person) { return person.name || "Unnamed"; }

function plural(n, one) { return `${n} ${one}${n === 1 ? "" : "s"}`; }

// A person's photos: a person: search when it has a name (the results can be narrowed and
// sorted like any search), else the People page's view of that person.
export function openPerson(ctx, id, name) {
  if (name) ctx.search(`person:${quoted(name)}`);
  else ctx.openPeople(id);
}

// ---- the People page ----------------------------------------------------------------------

let selected = new Set(); // person ids chosen for a merge
let people = [];          // the persons listed, as /api/people gives them
let loads = 0;            // the lists asked for: only the last one asked for is shown

function say(text, error = false) {
  const m = $("people-message");
  m.textContent = text;
  m.classList.toggle("error", error);
}

// Named persons first (most photos first, then by name), then the unnamed (most photos first).
function ordered(list) {
  return [...list].sort((a, b) => (b.name ? 1 : 0) - (a.name ? 1 : 0) || b.images - a.images
    || (a.name || "").localeCompare(b.name || "") || a.id - b.id);
}

async function change(ctx, id, body) {
  return ctx.json(`/api/people/${id}`, {
    method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
}

// Shows the People page: the list (`person` null) or one person's photos.
export async function showPeople(ctx, person) {
  $("people-list").hidden = person !== null;
  $("person-view").hidden = person === null;
  if (person !== null) { showPerson(ctx, person); return; }
  say("Loading the people…");
  const grid = $("people-grid");
  const loading = (loads += 1);
  grid.setAttribute("aria-busy", "true"); // until the list shown is the one asked for
  let list;
  try {
    ({ people: list } = await ctx.json(`/api/people${$("people-hidden").checked ? "?hidden=true" : ""}`));
  } catch (e) {
    if (ctx.shown()) say(e.message, true);
    if (loading === loads) grid.removeAttribute("aria-busy");
    return;
  }
  if (!ctx.shown() || loading !== loads) return;
  people = ordered(list);
  selected = new Set([...selected].filter((id) => people.some((p) => p.id === id)));
  grid.replaceChildren(...people.map((p) => personCard(ctx, p)));
  grid.removeAttribute("aria-busy");
  updateMerge();
  say(people.length ? "" : "No people yet: faces are grouped into people once the face pass has run (clipdex people --scan).");
}

function faceImage(ctx, face, size) {
  const img = document.createElement("img");
  img.alt = "";
  img.loading = "lazy";
  img.width = img.height = size;
  if (face) ctx.setImage(img, `/api/faces/${face.id}/thumb?size=${size}`);
  return img;
}

// One person: its face (a button that opens its photos), its name and photo count, and its
// actions: select for a merge, rename, hide (or show again).
function personCard(ctx, p) {
  const li = document.createElement("li");
  li.className = "person";
  li.dataset.id = p.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "person-open";
  const name = document.createElement("span");
  name.className = "person-name";
  name.textContent = label(p);
  if (!p.name) {
    const which = document.createElement("span");
    which.className = "visually-hidden";
    which.textContent = ` person ${p.id}`;
    name.append(which);
  }
  open.append(faceImage(ctx, p.representative, 160), name);
  open.title = p.name ? `Photos of ${p.name} (a person:${quoted(p.name)} search)` : "Photos of this person";
  open.addEventListener("click", () => openPerson(ctx, p.id, p.name));
  const count = document.createElement("span");
  count.className = "person-count";
  count.textContent = plural(p.images, "photo") + (p.hidden ? " · hidden" : "");
  const actions = document.createElement("div");
  actions.className = "person-actions";
  const pick = document.createElement("label");
  pick.className = "person-select";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = selected.has(p.id);
  box.addEventListener("change", () => {
    if (box.checked) selected.add(p.id); else selected.delete(p.id);
    li.classList.toggle("selected", box.checked);
    updateMerge();
  });
  li.classList.toggle("selected", box.checked);
  const pickText = document.createElement("span");
  pickText.className = "visually-hidden";
  pickText.textContent = ` ${label(p)}${p.name ? "" : ` person ${p.id}`} for merging`;
  pick.append(box, " Select", pickText);
  const rename = actionButton("Rename", `Rename ${label(p)}${p.name ? "" : ` person ${p.id}`}`, () => startRename(ctx, li, p, rename));
  const hide = actionButton(p.hidden ? "Show" : "Hide", `${p.hidden ? "Show" : "Hide"} ${label(p)}${p.name ? "" : ` person ${p.id}`}`, async () => {
    hide.disabled = true;
    try {
      await change(ctx, p.id, { hidden: !p.hidden });
      selected.delete(p.id);
      await showPeople(ctx, null);
      say(p.hidden ? `${label(p)} is shown again.` : `${label(p)} is hidden (Show hidden people lists them).`);
      $("people-grid").querySelector(".person-open")?.focus();
    } catch (e) { hide.disabled = false; say(e.message, true); }
  });
  actions.append(pick, rename, hide);
  li.append(open, count, actions);
  return li;
}

// A small button whose accessible name starts with its visible text and says whose it is.
function actionButton(text, name, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link";
  b.textContent = text;
  if (name !== text) b.setAttribute("aria-label", name);
  b.addEventListener("click", onClick);
  return b;
}

// Renames in place: an input over the name; Enter saves, Escape cancels.
function startRename(ctx, li, p, button) {
  if (li.querySelector(".person-name-input")) { li.querySelector(".person-name-input").focus(); return; }
  const input = document.createElement("input");
  input.className = "person-name-input";
  input.value = p.name || "";
  input.maxLength = 200;
  input.placeholder = "Name";
  input.setAttribute("aria-label", `Name of ${label(p)}${p.name ? "" : ` person ${p.id}`} (Enter saves, Escape cancels)`);
  const open = li.querySelector(".person-open");
  open.querySelector(".person-name").hidden = true;
  open.after(input);
  const stop = () => {
    input.remove();
    open.querySelector(".person-name").hidden = false;
    button.focus();
  };
  input.addEventListener("keydown", async (event) => {
    if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); stop(); return; }
    if (event.key !== "Enter") return;
    event.preventDefault();
    const name = input.value.trim();
    if (name === (p.name || "")) { stop(); return; }
    input.disabled = true;
    try {
      await change(ctx, p.id, { name });
      await showPeople(ctx, null);
      loadPersonNames(ctx);
      say(name ? `Named ${name}.` : "The name is taken away.");
      // The list is in another order now: the focus goes to the person renamed.
      $("people-grid").querySelector(`.person[data-id="${p.id}"] .person-open`)?.focus();
    } catch (e) {
      input.disabled = false;
      input.focus();
      say(`Not renamed: ${e.message}`, true);
    }
  });
  input.focus();
  input.select();
}

function updateMerge() {
  const n = selected.size;
  const merge = $("people-merge");
  merge.disabled = n < 2;
  merge.textContent = n ? `Merge selected (${n})` : "Merge selected";
}

// Merges the selected persons into one: the named one with the most photos, else the one with
// the most photos. It keeps its name; a person with none takes the first name merged into it.
async function mergeSelected(ctx) {
  const chosen = people.filter((p) => selected.has(p.id));
  if (chosen.length < 2) { say("Select two or more people to merge."); return; }
  const [into, ...others] = [...chosen].sort((a, b) => (b.name ? 1 : 0) - (a.name ? 1 : 0) || b.images - a.images || a.id - b.id);
  $("people-merge").disabled = true;
  try {
    const { person } = await change(ctx, into.id, { merge: others.map((p) => p.id) });
    selected = new Set();
    await showPeople(ctx, null);
    loadPersonNames(ctx);
    say(`Merged ${chosen.length} people into ${person && person.name ? person.name : `person ${into.id}`}.`);
    $("people-grid").querySelector(`.person[data-id="${into.id}"] .person-open`)?.focus();
  } catch (e) { updateMerge(); say(`Not merged: ${e.message}`, true); }
}

// One person's photos (for persons without a name; named ones are a person: search).
async function showPerson(ctx, id) {
  const grid = $("person-photos");
  grid.replaceChildren();
  $("person-title").textContent = "Loading…";
  let person, faces;
  try { ({ person, faces } = await ctx.json(`/api/people/${id}`)); } catch (e) {
    if (ctx.shown()) $("person-title").textContent = e.message;
    return;
  }
  if (!ctx.shown()) return;
  $("person-title").textContent = `${label(person)} · ${plural(person.images, "photo")}`;
  const images = [...new Set(faces.map((f) => f.image))];
  grid.replaceChildren(...images.map((image) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "tile";
    b.dataset.id = image;
    const img = document.createElement("img");
    img.alt = `Photo ${image}`;
    img.loading = "lazy";
    ctx.setImage(img, `/api/images/${image}/thumb?size=256`);
    b.append(img);
    b.addEventListener("click", () => ctx.openPhoto(image));
    li.append(b);
    return li;
  }));
}

// Wires the page's fixed controls once.
export function wirePeople(ctx) {
  $("people-merge").addEventListener("click", () => mergeSelected(ctx));
  $("people-hidden").addEventListener("change", () => showPeople(ctx, null));
  $("people-back").addEventListener("click", (event) => { event.preventDefault(); ctx.openPeople(null); });
}

// The named persons for the search form's Person field.
export async function loadPersonNames(ctx) {
  try {
    const { people: list } = await ctx.json("/api/people");
    $("person-list").replaceChildren(...list.filter((p) => p.name).map((p) => {
      const o = document.createElement("option");
      o.value = p.name;
      o.label = `${p.name} (${plural(p.images, "photo")})`;
      return o;
    }));
  } catch { /* people are optional */ }
}

// ---- faces in the detail view ---------------------------------------------------------------

let facesPinned = false; // the boxes stay shown (the toggle pressed)

function faceName(face) { return face.person || "Unknown"; }

// The faces of the photo in the detail view: a box per face over the photo, with the person's
// name, shown while the toggle is pointed at or focused, or while it is pressed; and a list
// (name: opens the person; "Not this person").
export function showFaces(ctx, image) {
  const faces = image.faces || [];
  const boxes = $("detail-faces"), list = $("detail-face-list"), toggle = $("detail-faces-toggle");
  $("detail-people").hidden = faces.length === 0;
  toggle.textContent = `Faces (${faces.length})`;
  toggle.setAttribute("aria-pressed", String(facesPinned));
  // Boxes are drawn over a photo, not over a video's player.
  const overPhoto = !$("detail-image").hidden;
  boxes.replaceChildren(...(overPhoto ? faces.map((f) => faceBox(ctx, f, image)) : []));
  setBoxesShown(facesPinned);
  list.replaceChildren(...faces.map((f, i) => faceRow(ctx, f, i, image)));
}

function faceBox(ctx, face, image) {
  const [x, y, w, h] = face.box;
  const clamp = (v) => Math.min(1, Math.max(0, v));
  const left = clamp(x / image.width), top = clamp(y / image.height);
  const right = clamp((x + w) / image.width), bottom = clamp((y + h) / image.height);
  const box = document.createElement("div");
  box.className = "face-box";
  box.dataset.face = face.id;
  box.style.left = `${left * 100}%`;
  box.style.top = `${top * 100}%`;
  box.style.width = `${(right - left) * 100}%`;
  box.style.height = `${(bottom - top) * 100}%`;
  const name = document.createElement("button");
  name.type = "button";
  name.className = "face-name";
  name.textContent = faceName(face);
  // The list beside the photo holds the same buttons: one tab stop per face.
  name.tabIndex = -1;
  if (face.person_id != null) name.addEventListener("click", () => openPerson(ctx, face.person_id, face.person));
  else name.disabled = true;
  box.append(name);
  return box;
}

function faceRow(ctx, face, index, image) {
  const li = document.createElement("li");
  li.dataset.face = face.id;
  const which = ` (face ${index + 1})`;
  if (face.person_id != null) {
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link face-person";
    open.textContent = faceName(face);
    open.setAttribute("aria-label", `${faceName(face)}${which}: their photos`);
    open.addEventListener("click", () => openPerson(ctx, face.person_id, face.person));
    const not = document.createElement("button");
    not.type = "button";
    not.className = "link face-not";
    not.textContent = "Not this person";
    not.setAttribute("aria-label", `Not this person${which}: not ${faceName(face)}`);
    not.addEventListener("click", async () => {
      not.disabled = true;
      try {
        await ctx.json(`/api/faces/${face.id}/not`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ person: face.person_id }),
        });
        const again = await ctx.json(`/api/images/${image.id}`);
        showFaces(ctx, again);
        $("detail-faces-toggle").focus();
      } catch (e) { not.disabled = false; not.textContent = e.message; }
    });
    li.append(open, " ", not);
  } else {
    const unknown = document.createElement("span");
    unknown.textContent = faceName(face);
    const hint = document.createElement("span");
    hint.className = "visually-hidden";
    hint.textContent = which;
    li.append(unknown, hint);
  }
  // Pointing at a face in the list shows its box alone.
  li.addEventListener("mouseenter", () => highlight(face.id));
  li.addEventListener("mouseleave", () => highlight(null));
  li.addEventListener("focusin", () => highlight(face.id));
  li.addEventListener("focusout", () => highlight(null));
  return li;
}

function setBoxesShown(shown) { $("detail-faces").hidden = !shown; }

function highlight(faceId) {
  const boxes = $("detail-faces");
  for (const b of boxes.children) b.classList.toggle("dim", faceId !== null && b.dataset.face !== String(faceId));
  setBoxesShown(facesPinned || faceId !== null || boxes.dataset.preview === "1");
}

// The toggle: pressed, the boxes stay; pointed at or focused, they show meanwhile.
export function wireFaces() {
  const toggle = $("detail-faces-toggle"), boxes = $("detail-faces");
  const preview = (on) => { boxes.dataset.preview = on ? "1" : ""; setBoxesShown(facesPinned || on); };
  toggle.addEventListener("click", () => {
    facesPinned = !facesPinned;
    toggle.setAttribute("aria-pressed", String(facesPinned));
    setBoxesShown(facesPinned);
  });
  toggle.addEventListener("mouseenter", () => preview(true));
  toggle.addEventListener("mouseleave", () => preview(false));
  toggle.addEventListener("focus", () => preview(true));
  toggle.addEventListener("blur", () => preview(false));
}

// ---- person: and place: chips of a search ------------------------------------------------

// Every filter of the query language (src/query/syntax.rs KEYS), and width/height comparisons; `-text:` leaves out.
const CHIP = /(^|\s)(-?)(person|place|tag|in|after|before|kind|camera|lens|ext|orientation|text|near|width|height)(:|[<>]=?|=)("(?:[^"\\]|\\.)*"|\S+)/gi;
const CHIP_LABELS = {
  person: "Person", place: "Place", tag: "Tag", in: "Folder", after: "After", before: "Before", kind: "Kind",
  camera: "Camera", lens: "Lens", ext: "Type", orientation: "Orientation", text: "Text", near: "Near",
  width: "Width", height: "Height",
};

function unquote(value) {
  return value.startsWith('"') ? value.slice(1, -1).replace(/\\(["\\])/g, "$1") : value;
}

// The query with `key:value` added (once: a person already in it is not added again).
export function withFilter(q, key, value) {
  if (!value) return q;
  const present = [...q.matchAll(CHIP)].some((m) => !m[2] && m[3].toLowerCase() === key && m[4] === ":" && unquote(m[5]).toLowerCase() === value.toLowerCase());
  return present ? q : `${q} ${key}:${quoted(value)}`.trim();
}

// The chips of the filters written in the query (every key, and width/height comparisons), each with a button that
// searches again without it (`search(q)`).
export function filterChips(q, search) {
  const chips = [];
  for (const m of q.matchAll(CHIP)) {
    const [whole, lead, neg, rawKey, op, raw] = m;
    const key = rawKey.toLowerCase();
    // `width>3000` is a comparison, not a `key:value`: its chip shows the operator.
    const value = op === ":" ? unquote(raw) : `${op} ${raw}`;
    const li = document.createElement("li");
    li.className = "chip";
    li.dataset.key = key;
    const text = document.createElement("span");
    text.textContent = (neg ? "Not " : "") + (op === ":" ? `${CHIP_LABELS[key]}: ${value}` : `${CHIP_LABELS[key]} ${value}`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove the filter ${neg}${rawKey}${op}${op === ":" ? value : raw}`);
    const at = m.index + lead.length, end = m.index + whole.length;
    remove.addEventListener("click", () => search(`${q.slice(0, at)}${q.slice(end)}`.replace(/\s+/g, " ").trim()));
    li.append(text, remove);
    chips.push(li);
  }
  return chips;
}

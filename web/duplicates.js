// Duplicates resolved in the UI: in a group, "Keep this one" moves the group's other photos
// out of the library; "Keep the suggested photo in every group" does it for all groups. The
// photos go to a new folder below the library's duplicates folder (POST
// /api/duplicates/resolve, as `clipdex duplicates --move-to` lays it out), and "Undo" puts
// them back and has them indexed again (POST /api/duplicates/restore). clipdex deletes nothing.

let json = null;
let reload = () => {};

const $ = (id) => document.getElementById(id);

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function fileName(path) { return String(path).split("/").pop(); }

// `request(path, body)`: the page's JSON call with the token; `again()` shows the groups anew.
export function setUpDuplicates(request, again) {
  json = request;
  reload = again;
  $("dup-all").addEventListener("click", () => resolve({ all: true }, null));
}

// Shows or hides "for all groups" after the groups are listed.
export function duplicatesListed(groups) {
  $("dup-all").hidden = groups === 0;
}

const post = (path, body) => json(path, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

// Adds "Keep this one" to each photo of a group's element.
export function addKeepButtons(group, el) {
  for (const fig of el.querySelectorAll("figure[data-id]")) {
    const id = Number(fig.dataset.id);
    const image = group.images.find((i) => i.id === id);
    const others = group.images.filter((i) => i.id !== id).map((i) => i.id);
    const keep = document.createElement("button");
    keep.type = "button";
    keep.className = "keep-button";
    keep.textContent = "Keep this one";
    keep.setAttribute("aria-label", `Keep this one: ${fileName(image.path)}; move the other ${plural(others.length, "photo")} out`);
    keep.addEventListener("click", () => resolve({ groups: [{ keep: id, move: others }] }, el));
    fig.append(keep);
  }
}

async function resolve(body, groupEl) {
  const status = $("dup-undo");
  status.textContent = "Moving…";
  for (const b of document.querySelectorAll("#duplicates button")) b.disabled = true;
  try {
    const done = await post("/api/duplicates/resolve", body);
    if (groupEl) groupEl.remove(); else $("dup-groups").replaceChildren();
    showUndo(done);
  } catch (e) {
    status.textContent = e.message;
  } finally {
    for (const b of document.querySelectorAll("#duplicates button")) b.disabled = false;
  }
  duplicatesListed($("dup-groups").children.length);
  document.dispatchEvent(new CustomEvent("clipdex:duplicates-changed"));
}

function showUndo(done) {
  const status = $("dup-undo");
  const left = done.skipped.length ? ` ${plural(done.skipped.length, "file")} stayed: ${done.skipped.map((s) => `${fileName(s.path)} (${s.reason})`).join("; ")}.` : "";
  status.textContent = `Moved ${plural(done.moved.length, "file")} out of the library to ${done.folder}.${left} `;
  if (!done.moved.length) return;
  const undo = document.createElement("button");
  undo.type = "button";
  undo.id = "dup-undo-button";
  undo.textContent = "Undo";
  undo.addEventListener("click", async () => {
    undo.disabled = true;
    status.textContent = "Putting them back…";
    try {
      const back = await post("/api/duplicates/restore", { batch: done.batch });
      const stayed = back.skipped.length ? ` ${plural(back.skipped.length, "file")} could not go back: ${back.skipped.map((s) => s.reason).join("; ")}.` : "";
      status.textContent = `Put back ${plural(back.restored.length, "file")}${back.indexed ? "" : "; they are indexed again with the next pass"}.${stayed}`;
      reload();
    } catch (e) {
      status.textContent = e.message;
      undo.disabled = false;
      status.append(" ", undo);
    }
  });
  status.append(undo);
  undo.focus();
}

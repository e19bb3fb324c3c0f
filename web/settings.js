// The Settings view: the library's models and settings (GET and PUT /api/settings), the same
// record `clipdex config` shows and changes. A change applies at once: the server loads the
// models it names on their next use, and its background jobs stop or start again.

const LABELS = {
  model: "CLIP model",
  text_model: "Text model for queries",
  caption_model: "Captioning model",
  vqa_model: "Question answering model",
  itm_model: "Image–text matching model",
  seg_model: "Segmentation model",
  ocr_model: "Text reading (OCR) model folder",
  face_model: "Face model folder (people), or none",
  precision: "Precision",
  background_jobs: "Run background jobs",
  duplicates_folder: "Folder for moved duplicates",
};

const PRECISIONS = ["f32", "bf16", "int8", "auto"];

// One setting: a labelled control with its purpose and default as its description.
function field(setting) {
  const id = `setting-${setting.name}`;
  const row = document.createElement("div");
  row.className = "setting";
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = LABELS[setting.name] || setting.name;
  let control;
  if (setting.name === "background_jobs") {
    control = document.createElement("input");
    control.type = "checkbox";
    control.checked = (setting.value ?? setting.default) === "on";
    row.classList.add("switch");
  } else if (setting.name === "precision") {
    control = document.createElement("select");
    control.append(new Option(`default (${setting.default})`, ""), ...PRECISIONS.map((p) => new Option(p, p)));
    control.value = setting.value ?? "";
  } else {
    control = document.createElement("input");
    control.type = "text";
    control.value = setting.value ?? "";
    control.placeholder = setting.default;
    control.spellcheck = false;
  }
  control.id = id;
  control.name = setting.name;
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.id = `${id}-hint`;
  const about = setting.about.charAt(0).toUpperCase() + setting.about.slice(1);
  hint.textContent = `${about}. Default: ${setting.default}.`;
  control.setAttribute("aria-describedby", hint.id);
  row.append(label, control, hint);
  return row;
}

// What the form asks to change, as the PUT body (nothing: empty).
function changes(form, settings) {
  const body = {};
  for (const s of settings) {
    const control = form.elements.namedItem(s.name);
    if (!control) continue;
    if (control.type === "checkbox") {
      if (control.checked !== ((s.value ?? s.default) === "on")) body[s.name] = control.checked;
    } else {
      const value = control.value.trim() || null;
      if (value !== (s.value ?? null)) body[s.name] = value;
    }
  }
  return body;
}

// Shows the settings in `form`; `json` is the UI's API call, `message` where outcomes go.
export async function showSettings(json, form, message) {
  message.textContent = "Loading the settings…";
  let settings;
  try {
    ({ settings } = await json("/api/settings"));
  } catch (e) {
    message.textContent = e.message;
    return;
  }
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save";
  form.replaceChildren(...settings.map(field), save);
  message.textContent = "";
  form.onsubmit = async (event) => {
    event.preventDefault();
    const body = changes(form, settings);
    if (!Object.keys(body).length) { message.textContent = "Nothing changed."; return; }
    save.disabled = true;
    try {
      ({ settings } = await json("/api/settings", {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      }));
      form.replaceChildren(...settings.map(field), save);
      message.textContent = `Saved: ${Object.keys(body).map((n) => LABELS[n] || n).join(", ")}. In use now, no restart needed.`;
    } catch (e) {
      message.textContent = `Not saved: ${e.message}`;
    } finally {
      save.disabled = false;
    }
  };
}

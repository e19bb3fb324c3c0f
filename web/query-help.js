// The search box's help and autocompletion. A "?" button opens the query language's syntax with
// examples; typing suggests, for the word at the cursor, the filter keys that start with it and,
// after tag:, place: or camera:, the library's tags, places and cameras. The box is an
// ARIA 1.2 combobox: Down and Up move through the suggestions, Enter takes one, Escape closes
// the list (or the help).

const KEYS = [
  ["tag:", "an auto-tag"], ["in:", "a folder"], ["after:", "from a date: 2024, 2024-06, last-month"],
  ["before:", "before a date"], ["kind:", "photo or video"], ["camera:", "make or model"],
  ["lens:", "lens make or model"], ["place:", "a city, region or country, any language"],
  ["near:", "LAT,LON,KM"], ["person:", "a named person"], ["ext:", "a file extension"],
  ["orientation:", "portrait, landscape or square"], ["width>", "pixels"], ["height>", "pixels"],
  ["text:", "words read in the photo"],
];

const HELP = [
  ["dog on a beach -night", "words; -word or NOT \"a phrase\" takes them away"],
  ["\"2:golden retriever\" + #1000003", "weigh a term with 2:, add an indexed photo with + #ID"],
  ["tag:dog in:Holidays after:last-month", "filters: key:value, all must hold"],
  ["camera:fuji lens:23mm orientation:portrait width>3000", "camera, lens, shape and size"],
  ["place:Lisboa", "where it was taken: a city, region or country, in any language"],
  ["near:38.72,-9.14,5", "within 5 km of a position"],
  ["kind:video ext:heic,jpg person:Anna", "photos or videos, file types, people"],
  ["receipt text:\"48213\" -text:void", "words read in the photo (text reading on); -text: leaves out"],
];

const MAX_SHOWN = 8;

// Case and accents off, as the server compares place names.
const fold = (s) => s.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();

export function attachQueryHelp(input, json) {
  const button = document.createElement("button");
  button.type = "button";
  button.id = "query-help-button";
  button.className = "file-button";
  button.textContent = "?";
  button.setAttribute("aria-label", "Search syntax");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "query-help");
  const help = document.createElement("section");
  help.id = "query-help";
  help.hidden = true;
  help.setAttribute("aria-label", "Search syntax");
  const title = document.createElement("h2");
  title.textContent = "Search syntax";
  const table = document.createElement("dl");
  for (const [example, meaning] of HELP) {
    const dt = document.createElement("dt");
    const code = document.createElement("code");
    code.textContent = example;
    dt.append(code);
    const dd = document.createElement("dd");
    dd.textContent = meaning;
    table.append(dt, dd);
  }
  const keys = document.createElement("p");
  keys.textContent = `Keys: ${KEYS.map((k) => k[0]).join(" ")}. Quote values with spaces: place:"New York".`;
  help.append(title, table, keys);

  const list = document.createElement("ul");
  list.id = "query-suggestions";
  list.hidden = true;
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", "Suggestions");
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-expanded", "false");
  input.setAttribute("aria-controls", list.id);
  input.after(list, button, help);

  const showHelp = (open) => {
    help.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
  };
  button.addEventListener("click", () => showHelp(help.hidden));
  help.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { showHelp(false); button.focus(); }
  });
  button.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !help.hidden) { event.preventDefault(); showHelp(false); }
  });

  // Values for a key, each {value, label}, fetched once.
  const sources = {
    tag: async () => (await json("/api/tags")).tags.map((t) => ({ value: t.label, label: `${t.label} (${t.count})` })),
    place: async () => {
      // Photos per name: a city, region or country (Lisbon the city and the region once).
      const seen = new Map();
      for (const p of (await json("/api/places")).places) {
        for (const name of new Set([p.city, p.region, p.country].filter(Boolean))) {
          seen.set(name, (seen.get(name) || 0) + p.count);
        }
      }
      return [...seen].sort((a, b) => b[1] - a[1]).map(([value, count]) => ({ value, label: `${value} (${count})` }));
    },
    // The cameras of (up to) the newest 1,000 photos: a filter-only query's facets.
    camera: async () => (await json("/api/search?q=after%3A1900&k=1&facets=camera")).facets.camera
      .map((c) => ({ value: c.value, label: `${c.value} (${c.count})` })),
  };
  const cache = {};
  const valuesOf = (key) => {
    if (!cache[key]) cache[key] = sources[key]().catch(() => []);
    return cache[key];
  };

  let items = [];
  let active = -1;
  let word = null; // {start, end} of the word being completed
  let generation = 0;

  const close = () => {
    list.hidden = true;
    items = [];
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  };
  const mark = (i) => {
    active = i;
    [...list.children].forEach((li, j) => li.setAttribute("aria-selected", String(j === i)));
    if (i >= 0) {
      input.setAttribute("aria-activedescendant", list.children[i].id);
      list.children[i].scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  };
  const show = (found) => {
    items = found.slice(0, MAX_SHOWN);
    list.replaceChildren(...items.map((item, i) => {
      const li = document.createElement("li");
      li.id = `query-suggestion-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.textContent = item.label;
      li.addEventListener("mousedown", (event) => event.preventDefault());
      li.addEventListener("click", () => take(i));
      return li;
    }));
    if (!items.length) { close(); return; }
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    mark(-1);
  };
  const take = (i) => {
    const item = items[i];
    if (!item || !word) return;
    const before = input.value.slice(0, word.start);
    const after = input.value.slice(word.end).replace(/^\s*/, "");
    const text = item.text + (item.key ? "" : " ");
    input.value = before + text + after;
    const cursor = (before + text).length;
    input.setSelectionRange(cursor, cursor);
    close();
    input.focus();
    if (item.key) update(); // a key taken: its values next
  };

  async function update() {
    const mine = ++generation;
    const cursor = input.selectionStart ?? input.value.length;
    const head = input.value.slice(0, cursor);
    const match = /(^|\s)(-?)([^\s]*)$/.exec(head);
    const typed = match ? match[3] : "";
    const start = cursor - typed.length;
    const endMatch = /^[^\s]*/.exec(input.value.slice(cursor));
    word = { start, end: cursor + (endMatch ? endMatch[0].length : 0) };
    const colon = typed.indexOf(":");
    if (colon < 0) {
      if (!typed || !/^\p{L}/u.test(typed) || (match && match[2])) { close(); return; }
      const lower = typed.toLowerCase();
      show(KEYS.filter(([k]) => k.startsWith(lower) && k !== lower)
        .map(([k, meaning]) => ({ text: k, key: true, label: `${k} ${meaning}` })));
      return;
    }
    const key = typed.slice(0, colon).toLowerCase();
    if (!Object.hasOwn(sources, key)) { close(); return; }
    const prefix = fold(typed.slice(colon + 1).replace(/^["“']/, ""));
    // The key list is stale once a key is typed out; its values may take a request to come.
    if (items.some((item) => item.key)) close();
    const values = await valuesOf(key);
    if (mine !== generation) return;
    show(values.filter((v) => fold(v.value).startsWith(prefix) && fold(v.value) !== prefix).map((v) => ({
      text: `${key}:${/[\s"]/.test(v.value) ? `"${v.value.replace(/(["\\])/g, "\\$1")}"` : v.value}`,
      label: v.label,
    })));
  }

  input.addEventListener("input", () => update());
  input.addEventListener("blur", () => close());
  input.addEventListener("keydown", (event) => {
    const open = !list.hidden && items.length > 0;
    if (event.key === "ArrowDown") {
      event.preventDefault();
      if (open) mark((active + 1) % items.length); else update();
    } else if (event.key === "ArrowUp" && open) {
      event.preventDefault();
      mark(active <= 0 ? items.length - 1 : active - 1);
    } else if (event.key === "Enter" && open && active >= 0) {
      // Take the suggestion instead of searching.
      event.preventDefault();
      take(active);
    } else if (event.key === "Escape" && (open || !help.hidden)) {
      // Close what is open, without clearing the box.
      event.preventDefault();
      close();
      showHelp(false);
    } else if (event.key === "Enter") {
      close();
    }
  });
}

// What the console keeps in the browser: the API token the user typed (and
// chose to remember), and instruction templates. Nothing else: call records,
// transcripts and numbers are read from the API and live only in memory.

const TOKEN_KEY = "switchboard.token";
const TEMPLATES_KEY = "switchboard.templates";

function storages() {
  const found = [];
  for (const name of ["localStorage", "sessionStorage"]) {
    try {
      if (window[name]) found.push(window[name]);
    } catch {
      // storage disabled by the browser: the token lasts as long as the page
    }
  }
  return found;
}

let memoryToken = null;

export function loadToken() {
  for (const storage of storages()) {
    const token = storage.getItem(TOKEN_KEY);
    if (token) return token;
  }
  return memoryToken;
}

/** Keep the token: across browser restarts when `remember`, else for this tab only. */
export function saveToken(token, remember) {
  clearToken();
  memoryToken = token;
  const [local, session] = storages();
  const target = remember ? local : session;
  try {
    target?.setItem(TOKEN_KEY, token);
  } catch {
    // quota or privacy mode: keep it in memory only
  }
}

export function clearToken() {
  memoryToken = null;
  for (const storage of storages()) storage.removeItem(TOKEN_KEY);
}

/** Saved instruction templates: [{name, instruction, voice?, greeting?}], sorted by name. */
export function loadTemplates() {
  try {
    const parsed = JSON.parse(localStorage.getItem(TEMPLATES_KEY) ?? "[]");
    return Array.isArray(parsed) ? parsed.filter((t) => t && typeof t.name === "string") : [];
  } catch {
    return [];
  }
}

export function saveTemplate(template) {
  const others = loadTemplates().filter((t) => t.name !== template.name);
  const all = [...others, template].sort((a, b) => a.name.localeCompare(b.name));
  localStorage.setItem(TEMPLATES_KEY, JSON.stringify(all));
  return all;
}

export function deleteTemplate(name) {
  const remaining = loadTemplates().filter((t) => t.name !== name);
  localStorage.setItem(TEMPLATES_KEY, JSON.stringify(remaining));
  return remaining;
}

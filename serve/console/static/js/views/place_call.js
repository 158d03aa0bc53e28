// The "Place a call" form: number checked as it is typed, instruction with
// saved templates, voice, greeting, and optional caller id, time limit and
// metadata. The API's own checks have the last word; its messages land on the
// field they name.

import { ApiError } from "../api.js";
import { h, setText } from "../dom.js";
import { checkE164 } from "../phone.js";
import { VOICES } from "../voices.js";
import { templatePicker } from "./template_picker.js";

const FIELD_IDS = {
  to: "call-to",
  instruction: "call-instruction",
  voice: "call-voice",
  greeting: "call-greeting",
  from: "call-from",
  max_duration_s: "call-max-duration",
  metadata: "call-metadata",
};

function field(id, label, control, help = "") {
  control.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    h("p", { id: `${id}-help`, class: "help" }, help),
    h("p", { id: `${id}-error`, class: "field-error" }),
  );
}

function showError(form, name, message) {
  const id = FIELD_IDS[name];
  const control = id && form.querySelector(`#${id}`);
  if (!control) return false;
  setText(form.querySelector(`#${id}-error`), message);
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
  return true;
}

/** Parse the metadata box: an object, or {error}. Empty means none. */
export function parseMetadata(text) {
  if (!text.trim()) return { value: {} };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: 'Metadata must be a JSON object, such as {"customer": "C-1042"}.' };
    }
    return { value };
  } catch (failure) {
    return { error: `Not valid JSON: ${failure.message}` };
  }
}

/**
 * Build the form. `onPlaced(call)` gets the API's record of every call the
 * form created, placed or failed, so the board shows it at once.
 */
export function placeCallForm({ api, toast, startWebCall, onPlaced }) {
  const to = h("input", {
    id: FIELD_IDS.to,
    name: "to",
    type: "tel",
    inputmode: "tel",
    autocomplete: "off",
    placeholder: "+15551234567",
    required: true,
  });
  const fix = h("button", { class: "button link", type: "button", hidden: true }, "");
  const instruction = h("textarea", {
    id: FIELD_IDS.instruction,
    name: "instruction",
    rows: 5,
    required: true,
    placeholder: "You are Ava from Bright Smiles Dental. Confirm Jane's cleaning on Monday at 4 pm…",
  });
  const voice = h(
    "select",
    { id: FIELD_IDS.voice, name: "voice" },
    h("option", { value: "" }, "Default"),
    VOICES.map((v) => h("option", { value: v }, v)),
  );
  const greeting = h("input", {
    id: FIELD_IDS.greeting,
    name: "greeting",
    type: "text",
    maxlength: 2000,
    placeholder: "Hi, this is Ava from Bright Smiles Dental.",
  });
  const from = h("input", { id: FIELD_IDS.from, name: "from", type: "tel", inputmode: "tel", autocomplete: "off", placeholder: "Server default" });
  const maxDuration = h("input", { id: FIELD_IDS.max_duration_s, name: "max_duration_s", type: "number", min: 1, step: 1, inputmode: "numeric", placeholder: "Server limit" });
  const metadata = h("textarea", { id: FIELD_IDS.metadata, name: "metadata", rows: 3, spellcheck: "false", placeholder: '{"customer": "C-1042"}' });

  const templates = templatePicker({
    fields: { instruction, voice, greeting },
    complain: (message) => showError(form, "instruction", message),
    toast,
  });

  const submit = h("button", { class: "button primary", type: "submit" }, "Place call");
  const talk = h(
    "button",
    { class: "button", type: "button", hidden: true, title: "Talk to the agent with this browser's microphone" },
    "Talk from this browser",
  );
  const formError = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "panel place-call", novalidate: true, "aria-labelledby": "place-call-title" },
    h("h2", { id: "place-call-title" }, "Place a call"),
    field(FIELD_IDS.to, "Phone number", to, "In E.164 form: + then the country code and number."),
    fix,
    h(
      "div",
      { class: "field" },
      h("label", { for: FIELD_IDS.instruction }, "Instruction"),
      templates.controls,
      templates.saveRow,
      instruction,
      h("p", { id: `${FIELD_IDS.instruction}-help`, class: "help" }, "What the agent should do on this call."),
      h("p", { id: `${FIELD_IDS.instruction}-error`, class: "field-error" }),
    ),
    h(
      "div",
      { class: "field-row" },
      field(FIELD_IDS.voice, "Voice", voice),
      field(FIELD_IDS.greeting, "Greeting", greeting, "The agent's first words (optional)."),
    ),
    h(
      "details",
      { class: "more" },
      h("summary", {}, "More options"),
      field(FIELD_IDS.from, "Caller ID", from, "E.164; leave empty for the server's number."),
      field(FIELD_IDS.max_duration_s, "Time limit (seconds)", maxDuration),
      field(FIELD_IDS.metadata, "Metadata (JSON object)", metadata, "Kept with the call record, e.g. your CRM ids."),
    ),
    formError,
    h("div", { class: "form-actions" }, submit, talk),
  );
  instruction.setAttribute("aria-describedby", `${FIELD_IDS.instruction}-help ${FIELD_IDS.instruction}-error`);

  // Checking as you type: the hint turns into an error once something is typed.
  let toTouched = false;
  function checkTo(final = false) {
    const result = checkE164(to.value);
    const helpNode = form.querySelector(`#${FIELD_IDS.to}-help`);
    if (result.ok) {
      showError(form, "to", "");
      setText(helpNode, `✓ ${result.message}`);
      helpNode.classList.add("ok");
    } else if (result.empty && !final) {
      showError(form, "to", "");
      setText(helpNode, result.message);
      helpNode.classList.remove("ok");
    } else {
      setText(helpNode, "");
      helpNode.classList.remove("ok");
      showError(form, "to", result.message);
    }
    fix.hidden = !result.fix;
    if (result.fix) {
      fix.textContent = `Use ${result.fix}`;
      fix.dataset.fix = result.fix;
    }
    return result.ok;
  }
  to.addEventListener("input", () => {
    toTouched = true;
    checkTo();
  });
  to.addEventListener("blur", () => toTouched && checkTo(true));
  fix.addEventListener("click", () => {
    to.value = fix.dataset.fix;
    checkTo();
    to.focus();
  });
  from.addEventListener("input", () => {
    const result = from.value.trim() ? checkE164(from.value) : { ok: true };
    showError(form, "from", result.ok ? "" : result.message);
  });
  metadata.addEventListener("input", () => showError(form, "metadata", parseMetadata(metadata.value).error ?? ""));
  instruction.addEventListener("input", () => {
    if (instruction.value.trim()) showError(form, "instruction", "");
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setText(formError, "");
    const problems = [];
    if (!checkTo(true)) problems.push(to);
    if (!instruction.value.trim()) {
      showError(form, "instruction", "Write what the agent should do on this call.");
      problems.push(instruction);
    }
    const meta = parseMetadata(metadata.value);
    if (meta.error) {
      showError(form, "metadata", meta.error);
      problems.push(metadata);
    }
    if (from.value.trim() && !checkE164(from.value).ok) problems.push(from);
    if (problems.length) {
      if (problems.some((p) => p.closest("details"))) form.querySelector("details.more").open = true;
      problems[0].focus();
      return;
    }
    const body = { to: to.value.trim(), instruction: instruction.value };
    if (voice.value) body.voice = voice.value;
    if (greeting.value.trim()) body.greeting = greeting.value.trim();
    if (from.value.trim()) body.from = from.value.trim();
    if (maxDuration.value) body.max_duration_s = Number(maxDuration.value);
    if (Object.keys(meta.value).length) body.metadata = meta.value;

    submit.disabled = true;
    setText(submit, "Placing…");
    try {
      const call = await api.placeCall(body);
      onPlaced(call);
      toast(`Calling ${call.to}…`);
      to.value = "";
      toTouched = false;
      checkTo();
    } catch (failure) {
      refused(failure);
    } finally {
      submit.disabled = false;
      setText(submit, "Place call");
    }
  });

  // The API's answer to a call it did not place (phone or web call alike): a call it
  // recorded and could not place (502) goes on the board; its word on a field lands there.
  function refused(failure) {
    if (!(failure instanceof ApiError)) throw failure;
    if (failure.status === 502 && failure.body?.call) {
      onPlaced(failure.body.call);
      setText(formError, failure.message);
    } else if (failure.status === 422) {
      let placed = false;
      for (const [name, message] of Object.entries(failure.fields)) {
        if (showError(form, name, message)) {
          if (!placed) {
            const control = form.querySelector(`#${FIELD_IDS[name]}`);
            if (control.closest("details")) control.closest("details").open = true;
            control.focus();
          }
          placed = true;
        }
      }
      if (!placed) setText(formError, failure.message);
    } else if (failure.status !== 401) {
      setText(formError, failure.message);
    }
  }

  // A web call needs no number: the same instruction, voice, greeting, time limit and
  // metadata, spoken to this browser's microphone (offered only when the server has
  // POST /calls/web).
  api.webCallsOffered().then((offered) => {
    talk.hidden = !offered || !startWebCall;
  });
  talk.addEventListener("click", async () => {
    setText(formError, "");
    if (!instruction.value.trim()) {
      showError(form, "instruction", "Write what the agent should do on this call.");
      instruction.focus();
      return;
    }
    const meta = parseMetadata(metadata.value);
    if (meta.error) {
      showError(form, "metadata", meta.error);
      form.querySelector("details.more").open = true;
      metadata.focus();
      return;
    }
    const body = { instruction: instruction.value };
    if (voice.value) body.voice = voice.value;
    if (greeting.value.trim()) body.greeting = greeting.value.trim();
    if (maxDuration.value) body.max_duration_s = Number(maxDuration.value);
    if (Object.keys(meta.value).length) body.metadata = meta.value;
    talk.disabled = true;
    try {
      const call = await startWebCall(body);
      if (call) onPlaced(call);
    } catch (failure) {
      refused(failure);
    } finally {
      talk.disabled = false;
    }
  });

  checkTo();
  return form;
}

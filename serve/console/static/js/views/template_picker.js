// Instruction templates in the place-call form: pick one to fill the
// instruction, voice and greeting; save the current ones under a name; delete.
// They live in this browser only (store.js).

import { h, replace } from "../dom.js";
import { deleteTemplate, loadTemplates, saveTemplate } from "../store.js";

/**
 * `fields` are the form's instruction, voice and greeting controls; `complain(message)`
 * puts a message on the instruction field ("" clears it).
 * Returns {controls, saveRow}: the picker row and the name row, for the form to place.
 */
export function templatePicker({ fields: { instruction, voice, greeting }, complain, toast }) {
  const picker = h("select", { id: "template-picker", "aria-label": "Instruction template" });
  const templateName = h("input", { id: "template-name", type: "text", placeholder: "Template name", "aria-label": "Template name" });
  const saveRow = h(
    "div",
    { class: "inline-form", hidden: true },
    templateName,
    h("button", { class: "button", type: "button", onclick: () => commit() }, "Save"),
    h("button", { class: "button quiet", type: "button", onclick: () => (saveRow.hidden = true) }, "Cancel"),
  );
  const deleteButton = h("button", { class: "button quiet", type: "button", disabled: true }, "Delete");
  const saveButton = h("button", { class: "button quiet", type: "button" }, "Save as template");

  function fill(selected = "") {
    const templates = loadTemplates();
    replace(
      picker,
      h("option", { value: "" }, templates.length ? "Templates…" : "No templates yet"),
      templates.map((t) => h("option", { value: t.name }, t.name)),
    );
    picker.value = selected;
    deleteButton.disabled = !picker.value;
  }

  function commit() {
    const name = templateName.value.trim();
    if (!name) {
      templateName.focus();
      return;
    }
    if (!instruction.value.trim()) {
      complain("Write an instruction to save it as a template.");
      instruction.focus();
      return;
    }
    saveTemplate({ name, instruction: instruction.value, voice: voice.value, greeting: greeting.value });
    fill(name);
    saveRow.hidden = true;
    toast(`Template “${name}” saved in this browser.`);
  }

  picker.addEventListener("change", () => {
    deleteButton.disabled = !picker.value;
    const template = loadTemplates().find((t) => t.name === picker.value);
    if (!template) return;
    instruction.value = template.instruction;
    voice.value = template.voice ?? "";
    greeting.value = template.greeting ?? "";
    complain("");
  });
  templateName.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      commit();
    } else if (event.key === "Escape") {
      saveRow.hidden = true;
    }
  });
  saveButton.addEventListener("click", () => {
    saveRow.hidden = false;
    templateName.value = picker.value;
    templateName.focus();
  });
  deleteButton.addEventListener("click", () => {
    const name = picker.value;
    if (!name) return;
    deleteTemplate(name);
    fill();
    toast(`Template “${name}” deleted.`);
  });

  fill();
  return { controls: h("div", { class: "templates" }, picker, saveButton, deleteButton), saveRow };
}

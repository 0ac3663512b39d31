// The review queue's keys (review/queue_step.html). A few lines here beat htmx: htmx has
// no way to say "this key, but not while typing", and the keys only click or focus the
// page's own buttons, links and fields, so everything they do also works by clicking.
"use strict";

(function () {
  const TYPING = "input, textarea, select, [contenteditable]";

  function item() {
    return document.getElementById("queue-item");
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target instanceof Element && target.closest(TYPING)) {
      // Escape leaves the comment box (or a label checkbox) so the keys work again.
      if (event.key === "Escape") target.blur();
      return;
    }
    const box = item();
    if (!box) return;
    const control = box.querySelector(`[data-key="${CSS.escape(event.key)}"]`);
    if (!control) return;
    event.preventDefault();
    if (control instanceof HTMLTextAreaElement) {
      control.focus();
    } else if (control instanceof HTMLDetailsElement) {
      control.open = !control.open;
      if (control.open) control.querySelector("input[type=checkbox], button")?.focus();
    } else {
      control.click();
    }
  }

  document.addEventListener("keydown", onKey);
})();

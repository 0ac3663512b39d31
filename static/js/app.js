// Small behaviours htmx has no attribute for. Each says why it is script and not htmx.
(function () {
  "use strict";

  // Enter sends, Shift+Enter adds a line. htmx could only express this with hx-trigger
  // filters, which need eval, and the Content-Security-Policy forbids eval.
  function onPromptKeydown(event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (event.target.value.trim() === "") return;
    event.target.form.requestSubmit();
  }

  // Esc stops the running reply from anywhere on the page: a document-wide shortcut.
  function onDocumentKeydown(event) {
    if (event.key !== "Escape") return;
    const stop = document.getElementById("stop");
    if (stop && document.querySelector(".message.streaming")) {
      event.preventDefault();
      stop.click();
    }
  }

  // Keep the newest text in view while it streams, unless the reader scrolled up to read:
  // htmx swaps content but has no notion of "stay pinned to the bottom".
  let pinned = true;
  function transcript() { return document.getElementById("transcript"); }
  function onScroll() {
    const el = transcript();
    if (el) pinned = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }
  function follow() {
    const el = transcript();
    if (el && pinned) el.scrollTop = el.scrollHeight;
  }

  // The server replaces the prompt box after a send (clearing it); give focus back.
  function onOobSwap(event) {
    const target = event.detail && event.detail.target;
    if (target && target.id === "prompt") {
      const prompt = document.getElementById("prompt");
      if (prompt) prompt.focus();
    }
    if (target && target.id === "transcript") {
      transcript().addEventListener("scroll", onScroll, { passive: true });
      follow();
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.target && event.target.id === "prompt") onPromptKeydown(event);
    onDocumentKeydown(event);
  });
  document.addEventListener("htmx:wsAfterMessage", follow);
  document.addEventListener("htmx:oobAfterSwap", onOobSwap);
  document.addEventListener("DOMContentLoaded", function () {
    const el = transcript();
    if (el) {
      el.addEventListener("scroll", onScroll, { passive: true });
      follow();
    }
    const prompt = document.getElementById("prompt");
    if (prompt) prompt.focus();
  });
})();

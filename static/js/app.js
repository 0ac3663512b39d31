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

  // A slider and its number box show one value. Native inputs cannot mirror each other and
  // htmx only moves HTML between server and page, so this is a few lines of script.
  function onInput(event) {
    const el = event.target;
    if (el.type === "range" && el.dataset.number) {
      const box = document.getElementById(el.dataset.number);
      if (box) box.value = el.value;
    } else if (el.type === "number" && el.id) {
      const slider = document.querySelector('input[type=range][data-number="' + el.id + '"]');
      if (slider && el.value !== "") slider.value = el.value;
    }
  }

  // "unset" empties a control so the parameter is left out of the request. The settings
  // panel saves on "change", so the click announces one.
  function unset(button) {
    const control = document.getElementById(button.dataset.unset);
    if (!control) return;
    control.querySelectorAll("input, select, textarea").forEach(function (el) {
      if (el.type === "range") return;
      if (el.type === "radio") el.checked = el.value === "";
      else el.value = "";
    });
    control.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // List editors (stop strings, logit bias) grow by cloning their last row.
  function addRow(button) {
    const editor = button.closest(".list-editor");
    const rows = editor.querySelectorAll(":scope > input, :scope > .row");
    const max = parseInt(editor.dataset.max || "0", 10);
    if (max && rows.length >= max) return;
    const row = rows[rows.length - 1].cloneNode(true);
    row.removeAttribute("id");
    (row.matches("input") ? [row] : row.querySelectorAll("input")).forEach(function (el) {
      el.value = "";
      el.removeAttribute("id");
    });
    editor.insertBefore(row, button);
    (row.matches("input") ? row : row.querySelector("input")).focus();
  }

  // Copying to the clipboard is a browser API; htmx has no attribute for it.
  function copy(button) {
    const source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  }

  // Pasted and dropped images go through the same htmx upload as the file picker: the
  // browser only hands them to script, so script puts them into the picker and fires it.
  function attach(files) {
    const input = document.getElementById("image-input");
    const images = Array.from(files || []).filter(function (f) { return f.type.startsWith("image/"); });
    if (!input || images.length === 0) return false;
    const transfer = new DataTransfer();
    images.forEach(function (f) { transfer.items.add(f); });
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }
  document.addEventListener("paste", function (event) {
    if (event.clipboardData && attach(event.clipboardData.files)) event.preventDefault();
  });
  document.addEventListener("dragover", function (event) {
    if (document.getElementById("image-input") && event.dataTransfer.types.includes("Files")) {
      event.preventDefault();
      document.body.classList.add("dropping");
    }
  });
  document.addEventListener("dragleave", function (event) {
    if (!event.relatedTarget) document.body.classList.remove("dropping");
  });
  document.addEventListener("drop", function (event) {
    document.body.classList.remove("dropping");
    if (attach(event.dataTransfer.files)) event.preventDefault();
  });
  // Let the same file be picked again after an upload.
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.target.id === "image-input") event.target.value = "";
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.remove) {
      const item = document.getElementById(button.dataset.remove);
      if (item) item.remove();
    } else if (button.dataset.unset) unset(button);
    else if (button.classList.contains("add-row")) addRow(button);
    else if (button.dataset.copy) copy(button);
  });
  document.addEventListener("input", onInput);

  document.addEventListener("keydown", function (event) {
    if (event.target && event.target.id === "prompt") onPromptKeydown(event);
    onDocumentKeydown(event);
  });
  // Streaming deltas arrive as "+t42:text" (or "+r42:" for reasoning) rather than as htmx
  // fragments: the wrapper of an out-of-band swap cost three times the text it carried.
  // The text goes in as a text node, so nothing in it is ever parsed as HTML.
  function onSocketMessage(event) {
    const message = event.detail.message;
    if (typeof message !== "string" || message.charAt(0) !== "+") return;
    event.preventDefault();
    const colon = message.indexOf(":");
    const kind = message.charAt(1) === "r" ? "reasoning-" : "text-";
    const target = document.getElementById(kind + message.slice(2, colon));
    if (target) target.appendChild(document.createTextNode(message.slice(colon + 1)));
    follow();
  }

  // The sidebar's "Show more" item replaces itself with the next page of rows. If it had the
  // focus (a keyboard user reached it), carry on at the first new row: htmx can only give
  // the focus back to an element with the same id, the new "Show more" past those rows.
  let rowBeforeMore = null;
  function onBeforeSwap(event) {
    const target = event.detail.target;
    const focused = target && target.matches("li.more") && target.contains(document.activeElement);
    rowBeforeMore = focused ? target.previousElementSibling : null;
  }
  function onAfterSwap() {
    const row = rowBeforeMore && rowBeforeMore.nextElementSibling;
    rowBeforeMore = null;
    const link = row && row.querySelector("a");
    if (link) link.focus();
  }

  document.addEventListener("htmx:beforeSwap", onBeforeSwap);
  document.addEventListener("htmx:afterSwap", onAfterSwap);

  // A process at its socket cap accepts and at once closes with 4503. The ws extension
  // retries only 1006/1011-1013, which Daphne cannot send, and htmx has no attribute to
  // show why a socket closed, so script says so and reconnects with a jittered backoff
  // (2, 4, … 60 s) that keeps a thousand waiting tabs from coming back at once.
  let capacityRetries = 0;
  function onSocketClose(event) {
    if (event.detail.event.code !== 4503) return;
    const seconds = Math.ceil(Math.min(60, 2 ** ++capacityRetries) * (0.5 + Math.random() / 2));
    const status = document.getElementById("composer-error");
    if (status) {
      status.textContent = "The server is at capacity; retrying in " + seconds + " s…";
      status.dataset.capacity = "1";
    }
    const socketElt = event.target;
    setTimeout(function () {
      if (document.body.contains(socketElt)) event.detail.socketWrapper.reconnect();
    }, seconds * 1000);
  }
  function onSocketOpen() {
    capacityRetries = 0;
    const status = document.getElementById("composer-error");
    if (status && status.dataset.capacity) {
      status.textContent = "";
      delete status.dataset.capacity;
    }
  }

  document.addEventListener("htmx:wsClose", onSocketClose);
  document.addEventListener("htmx:wsOpen", onSocketOpen);
  document.addEventListener("htmx:wsBeforeMessage", onSocketMessage);
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
    // An invitation link carries its token after "#": browsers never send that part, so
    // it stays out of access logs and Referer headers. Only script can read it into the form.
    const invite = document.getElementById("invite-token");
    if (invite && location.hash.length > 1) invite.value = location.hash.slice(1);
  });
})();

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
    const menu = document.querySelector(".topbar details[open]");
    if (menu) {
      // An open header menu closes first, and the focus goes back to its summary.
      menu.open = false;
      menu.querySelector("summary").focus();
      return;
    }
    if (document.querySelector(".drawer.open")) {
      closeDrawers();
      return;
    }
    const stop = document.getElementById("stop");
    if (stop && document.querySelector(".message.streaming, .streaming-row")) {
      event.preventDefault();
      stop.click();
    }
  }

  // A header menu (<details>) stays open until toggled: close it on a click outside it, and
  // close the others when one opens, as menus do. <details> has no such behaviour of its own.
  document.addEventListener("click", function (event) {
    document.querySelectorAll(".topbar details[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });

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
      if (el.type === "range") el.value = el.dataset.ghost;  // back to the default's place
      else if (el.type === "radio") el.checked = el.value === "";
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

  // The filter box shows only the parameters whose name has what was typed, opening the
  // sections they are in. It works on controls already in the page, as they are being
  // edited: a server round trip per keystroke would redraw them, and htmx has no filter.
  function filterParams(box) {
    const query = box.value.trim().toLowerCase().replace(/[\s-]+/g, "_");
    let found = 0;
    document.querySelectorAll("#settings details.params").forEach(function (section) {
      let shown = 0;
      section.querySelectorAll(".param").forEach(function (param) {
        // From the start of a word of the name: "top" finds top_p, not stop.
        param.hidden = query !== "" && !("_" + param.id.slice(6)).includes("_" + query);
        if (!param.hidden) shown++;
      });
      section.hidden = shown === 0;
      if (query && shown) section.open = true;
      found += shown;
    });
    document.getElementById("filter-none").hidden = found > 0;
    if (!query) applyClosed();
  }

  // Folded sections are kept in a cookie that the server reads to draw the panel folded the
  // same way. Where a section is open is the browser's state (<details>); htmx cannot send
  // it without eval, which the CSP forbids.
  function closedSections() {
    const match = document.cookie.match(/(?:^|; )panel_closed=([^;]*)/);
    return match ? match[1].split(".") : [];
  }
  function applyClosed() {
    const closed = closedSections();
    document.querySelectorAll("#settings details.params").forEach(function (section) {
      section.open = !closed.includes(section.dataset.section);
    });
  }
  function onToggle(event) {
    const section = event.target;
    const box = document.getElementById("param-filter");
    if (!section.matches || !section.matches("details.params") || (box && box.value)) return;
    const closed = closedSections().filter(function (key) {
      return key && key !== section.dataset.section;
    });
    if (!section.open) closed.push(section.dataset.section);
    document.cookie = "panel_closed=" + closed.join(".") + "; path=/; max-age=31536000; samesite=lax";
  }

  // Behind an open drawer the page is dimmed: keep the keyboard and screen readers in the
  // drawer. Everything beside it and beside each of its ancestors (the header and skip links
  // too, which Tab reached before) is made inert until it closes. Focus is no request and
  // htmx has no notion of it, so this is script.
  let inerted = [];
  function containFocus(drawer) {
    inerted.forEach(function (el) { el.inert = false; });
    inerted = [];
    for (let node = drawer; node && node.parentElement; node = node.parentElement) {
      if (node === document.body) break;
      Array.from(node.parentElement.children).forEach(function (sibling) {
        if (sibling === node || sibling.inert || sibling.tagName === "SCRIPT") return;
        sibling.inert = true;
        inerted.push(sibling);
      });
    }
  }

  // On narrow screens the conversations and the settings are drawers. Opening one is state
  // of this page alone (no request to make), so it is a class and aria-expanded set here.
  function setDrawer(id, open) {
    const drawer = document.getElementById(id);
    if (!drawer) return;
    drawer.classList.toggle("open", open);
    const anyOpen = !!document.querySelector(".drawer.open");
    document.body.classList.toggle("drawer-open", anyOpen);
    containFocus(document.querySelector(".drawer.open"));
    const toggle = document.querySelector('.drawer-toggle[data-drawer="' + id + '"]');
    if (toggle) toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      // Not the form's hidden CSRF input, which cannot take focus.
      const first = drawer.querySelector(".conv.current a, select, a, input:not([type=hidden]), button:not(.icon)");
      if (first) setTimeout(function () { first.focus(); }, 50);  // once visible
    } else if (toggle && drawer.contains(document.activeElement)) toggle.focus();
  }
  function closeDrawers() {
    document.querySelectorAll(".drawer.open").forEach(function (d) { setDrawer(d.id, false); });
  }
  // A window widened past the drawers' breakpoint shows both columns: none stays "open".
  window.matchMedia("(min-width: 801px)").addEventListener("change", closeDrawers);

  document.addEventListener("toggle", onToggle, true);  // toggle does not bubble
  document.addEventListener("input", function (event) {
    if (event.target.id === "param-filter") filterParams(event.target);
  });
  // A filter's change is no setting: keep it from the panel's save-on-change trigger.
  document.addEventListener("change", function (event) {
    if (event.target.id === "param-filter") event.stopPropagation();
  }, true);

  document.addEventListener("click", function (event) {
    if (document.body.classList.contains("drawer-open") && !event.target.closest(".drawer")) {
      closeDrawers();  // a click on the dimmed page beside the drawer
      return;
    }
    // "Skip to model" on a narrow screen: the model picker is in the closed settings drawer.
    const panel = document.getElementById("panel");
    if (event.target.closest('a[href="#model"]') && panel && getComputedStyle(panel).visibility === "hidden") {
      event.preventDefault();
      setDrawer("panel", true);
      return;
    }
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.drawer) {
      const drawer = document.getElementById(button.dataset.drawer);
      if (drawer) setDrawer(drawer.id, !drawer.classList.contains("open"));
      return;
    }
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
    followColumns();
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

  // Closes the server explains. A process at its socket cap accepts and at once closes with
  // 4503; a process shutting down closes with 4012 after sending the saved replies; a
  // message over the size limit gets 1009. The ws extension retries only 1006/1011-1013 and
  // htmx has no attribute to show why a socket closed, so script says so and reconnects with
  // a jittered backoff (2, 4, … 60 s) that keeps a thousand waiting tabs from coming back at
  // once.
  const CLOSES = {
    4503: "The server is at capacity; retrying in ",
    4012: "The server is restarting; reconnecting in ",
    1009: "That message is larger than the server accepts; nothing was sent. Reconnecting in ",
  };
  let closeRetries = 0;
  function onSocketClose(event) {
    const said = CLOSES[event.detail.event.code];
    if (!said) return;
    const seconds = Math.ceil(Math.min(60, 2 ** ++closeRetries) * (0.5 + Math.random() / 2));
    const status = document.getElementById("composer-error");
    if (status) {
      status.textContent = said + seconds + " s…";
      status.dataset.closed = "1";
    }
    const socketElt = event.target;
    setTimeout(function () {
      if (document.body.contains(socketElt)) event.detail.socketWrapper.reconnect();
    }, seconds * 1000);
  }
  function onSocketOpen() {
    closeRetries = 0;
    const status = document.getElementById("composer-error");
    if (status && status.dataset.closed) {
      status.textContent = "";
      delete status.dataset.closed;
    }
  }

  // ‹ › redraws the whole transcript, and the button that had the focus with it: keep the
  // keyboard where it was, on the same arrow of the same branch point (htmx restores focus
  // only to an element with the same id, and a sibling's buttons are new elements).
  let branchFocus = null;
  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest(".branch-nav button");
    branchFocus = button
      ? { group: button.parentElement.dataset.group, dir: button.dataset.dir }
      : branchFocus;
  });
  function restoreBranchFocus() {
    // Still on the old button (the redraw has not come yet), or moved on: nothing to do.
    if (!branchFocus || (document.activeElement && document.activeElement !== document.body)) return;
    const nav = document.querySelector('.branch-nav[data-group="' + branchFocus.group + '"]');
    if (!nav) return;
    const wanted = nav.querySelector('button[data-dir="' + branchFocus.dir + '"]');
    const target = wanted && !wanted.disabled ? wanted : nav.querySelector("button:not([disabled])");
    if (target) target.focus();
    branchFocus = null;
  }
  document.addEventListener("htmx:wsAfterMessage", restoreBranchFocus);
  // Compare columns scroll on their own. "Sync scroll" moves the others to the same place
  // (as a fraction of each one's height, since replies differ in length), and a column read
  // at its end keeps its newest text in view while it streams. Scroll positions are the
  // browser's alone: no request to make, so no htmx.
  let syncing = false;
  function onColumnScroll(event) {
    const el = event.target;
    if (!el.classList || !el.classList.contains("column-scroll")) return;
    el.dataset.pinned = String(el.scrollHeight - el.scrollTop - el.clientHeight < 40);
    const sync = document.getElementById("sync-scroll");
    if (syncing || !sync || !sync.checked) return;
    const fraction = el.scrollTop / Math.max(1, el.scrollHeight - el.clientHeight);
    syncing = true;
    document.querySelectorAll(".column-scroll").forEach(function (other) {
      if (other !== el) other.scrollTop = fraction * (other.scrollHeight - other.clientHeight);
    });
    requestAnimationFrame(function () { syncing = false; });
  }
  function followColumns() {
    document.querySelectorAll(".column-scroll").forEach(function (el) {
      if (el.dataset.pinned !== "false") el.scrollTop = el.scrollHeight;
    });
  }
  document.addEventListener("scroll", onColumnScroll, { capture: true, passive: true });
  document.addEventListener("htmx:wsAfterMessage", followColumns);

  document.addEventListener("htmx:wsClose", onSocketClose);
  document.addEventListener("htmx:wsOpen", onSocketOpen);
  document.addEventListener("htmx:wsBeforeMessage", onSocketMessage);
  document.addEventListener("htmx:wsAfterMessage", follow);
  document.addEventListener("htmx:oobAfterSwap", onOobSwap);
  // A mention in the inbox links to its comment (#comment-N), which arrives later, out of
  // band, inside a closed "Comments" <details>: the browser cannot scroll to it by itself,
  // and htmx has no way to act on the URL's fragment. Open it, and bring it into view the
  // first time. The bars can arrive twice on a page load (when the socket opens on a newer
  // transcript than the page drew, it redraws them), so each arrival opens it again.
  let commentShown = false;
  document.addEventListener("htmx:oobAfterSwap", function () {
    if (!location.hash.startsWith("#comment-")) return;
    const target = document.getElementById(location.hash.slice(1));
    if (!target) return;
    const details = target.closest("details");
    if (details) details.open = true;
    if (!commentShown) target.scrollIntoView({ block: "center" });
    commentShown = true;
  });
  // A teammate's annotation, comment or review status arrives as a loader that fetches the
  // bar (or the status) again (playground/review/live.py). A comment being written there
  // would be lost to the new copy, so that bar waits (the reader sees the change on their
  // next action); otherwise what the reader had open (labels, comments) stays open and the
  // keyboard stays on the same control of the new copy.
  const CONTROLS = "button, summary, input, select, textarea, a[href]";
  document.addEventListener("htmx:confirm", function (event) {
    const loader = event.target;
    if (!loader.classList || !loader.classList.contains("review-refresh")) return;
    const shown = document.querySelector(loader.getAttribute("hx-target"));
    const drafting = shown && Array.from(shown.querySelectorAll("textarea")).some(function (t) {
      return t.value.trim() !== "";
    });
    if (!shown || drafting) {
      event.preventDefault();
      return;
    }
    loader.dataset.open = Array.from(shown.querySelectorAll("details[open]")).map(function (d) {
      return d.className;
    }).join(" ");
    const controls = Array.from(shown.querySelectorAll(CONTROLS));
    loader.dataset.focus = String(controls.indexOf(document.activeElement));
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    const loader = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (!loader || !loader.classList || !loader.classList.contains("review-refresh")) return;
    const shown = document.querySelector(loader.getAttribute("hx-target"));
    if (!shown) return;
    (loader.dataset.open || "").split(" ").filter(Boolean).forEach(function (name) {
      const details = shown.querySelector("details." + name);
      if (details) details.open = true;
    });
    const focused = shown.querySelectorAll(CONTROLS)[Number(loader.dataset.focus)];
    if (focused && Number(loader.dataset.focus) >= 0) focused.focus();
  });
  // "All shown" ticks every History row's checkbox: a client-side toggle of many inputs,
  // which htmx (server round trips) has no attribute for.
  document.addEventListener("change", function (event) {
    const box = event.target;
    if (!box.dataset || !box.dataset.selectAll) return;
    document.querySelectorAll("input." + box.dataset.selectAll).forEach(function (row) {
      row.checked = box.checked;
    });
  });
  // The server groups the sidebar by the reader's days, and only the browser knows the
  // reader's time zone: it goes to the server in a cookie, read from the next page on.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone && !document.cookie.split("; ").includes("tz=" + zone)) {
    document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
  }

  document.addEventListener("DOMContentLoaded", function () {
    const el = transcript();
    if (el) {
      el.addEventListener("scroll", onScroll, { passive: true });
      follow();
    }
    // The open conversation may be far down a long list: bring its row into view. A page
    // load is no htmx swap, so no hx-swap "show:" modifier applies.
    const current = document.querySelector(".conv.current");
    if (current) current.scrollIntoView({ block: "nearest" });
    const prompt = document.getElementById("prompt");
    if (prompt && !location.hash) prompt.focus();
    // An invitation link carries its token after "#": browsers never send that part, so
    // it stays out of access logs and Referer headers. Only script can read it into the form.
    const invite = document.getElementById("invite-token");
    if (invite && location.hash.length > 1) invite.value = location.hash.slice(1);
  });
})();

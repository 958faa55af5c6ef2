/* StellarChat page behaviour: the chat socket (through the htmx WebSocket extension) and the
 * few interactions the server cannot do alone. No inline script anywhere (CSP script-src 'self').
 *
 * The socket speaks JSON (docs/websocket-api.md). Deltas are shown as plain text (textContent:
 * escaped by construction); when a reply ends, the server's rendered, sanitized HTML for that
 * message is swapped in with htmx.
 */
(function () {
  "use strict";

  const app = document.getElementById("app");
  if (!app) return;

  const $ = (sel, root) => (root || document).querySelector(sel);
  const t = (key) => app.dataset["t" + key.charAt(0).toUpperCase() + key.slice(1)] || key;
  const list = $("#messages");
  const scroller = $("#scroll");
  const composer = $("#composer");
  const input = $("#composer-input");
  const stopButton = $("#stop");
  const sendButton = $("#send");
  const errorBox = $("#composer-error");
  const status = $("#connection");
  const picker = $("#model-picker"); // only when the person may pick among several models
  const pickerNote = $("#model-description");
  // The model a message goes to: the picker's (the server switches the conversation to it),
  // or none (the conversation's own).
  const model = () => (picker ? picker.value : undefined);
  const optionOf = (name) =>
    picker ? Array.prototype.find.call(picker.options, (o) => o.value === name) : undefined;
  const labelOf = (name) => {
    const option = optionOf(name);
    return option ? option.textContent : name || t("assistant");
  };

  let conversation = app.dataset.conversation || null;
  let socket = null; // htmx ws extension's socket wrapper
  let streaming = null; // id of the reply streaming in this conversation
  const pending = new Map(); // client_id -> text typed (restored if the server refuses it)
  let seq = 0;
  let lastClose = 0; // the code the socket last closed with (1012: resend what was not saved)

  // --- helpers --------------------------------------------------------------------------
  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };
  const send = (frame) => {
    if (socket) socket.send(JSON.stringify(frame));
  };
  const showError = (text) => {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  };
  const setStreaming = (id) => {
    streaming = id;
    stopButton.hidden = !id;
    sendButton.hidden = !!id;
  };
  const setStatus = (state) => {
    status.dataset.state = state;
    status.textContent = t(state);
  };

  function bubble(id, role, text, by) {
    const li = document.createElement("li");
    li.className = "message message-" + role + (role === "assistant" ? " status-streaming" : "");
    li.id = "m-" + id;
    li.dataset.message = id;
    li.dataset.role = role;
    const who = document.createElement("div");
    who.className = "message-role";
    who.textContent = role === "user" ? t("you") : labelOf(by);
    const body = document.createElement("div");
    body.className = "message-body";
    const plain = document.createElement("div");
    plain.className = "plain";
    plain.textContent = text || "";
    body.appendChild(plain);
    li.append(who, body);
    return li;
  }

  function append(el) {
    const stick = nearBottom();
    list.appendChild(el);
    const empty = $("#empty-state");
    if (empty) empty.remove();
    if (stick) toBottom();
  }

  function refresh(id) {
    // The server renders the finished message (Markdown, sanitized); swap it in.
    const target = document.getElementById("m-" + id);
    if (!target || !conversation) return;
    htmx.ajax("GET", "/c/" + conversation + "/m/" + id + "/", { target: target, swap: "outerHTML" });
  }

  // --- frames from the server -----------------------------------------------------------
  const handlers = {
    "conversation.created"(f) {
      // Only the tab whose message started it follows it; another tab (even one on an empty
      // "new chat" page) just hears of it in its sidebar.
      if (!conversation && f.client_id && pending.has(f.client_id)) {
        conversation = f.conversation;
        app.dataset.conversation = conversation;
        $("#conversation-title").dataset.convTitle = conversation;
        history.replaceState(null, "", "/c/" + conversation + "/");
      }
      refreshSidebar();
    },
    "conversation.updated"(f) {
      document.querySelectorAll('[data-conv-title="' + CSS.escape(f.conversation) + '"]')
        .forEach((el) => { el.textContent = f.title; });
      if (f.conversation === conversation) document.title = f.title + " · StellarChat";
    },
    "message.saved"(f) {
      if (f.conversation !== conversation) return;
      if (f.client_id && pending.has(f.client_id)) pending.delete(f.client_id);
      if (f.message.replaces) dropFrom(f.message.replaces);
      if (!document.getElementById("m-" + f.message.id)) {
        append(bubble(f.message.id, "user", f.message.content));
        refresh(f.message.id); // the server's version carries the per-message actions
      }
    },
    "stream.start"(f) {
      if (f.conversation !== conversation) return;
      if (f.replaces) {
        const old = document.getElementById("m-" + f.replaces);
        if (old) old.remove();
      }
      if (!document.getElementById("m-" + f.message)) {
        append(bubble(f.message, "assistant", "", f.model));
      }
      if (picker && f.model && picker.value !== f.model && optionOf(f.model)) {
        picker.value = f.model; // another tab switched this conversation's model
        if (pickerNote) pickerNote.textContent = picker.selectedOptions[0].dataset.description;
      }
      setStreaming(f.message);
    },
    "stream.delta"(f) {
      if (f.conversation !== conversation) return;
      const el = document.getElementById("m-" + f.message);
      if (!el) return;
      const plain = el.querySelector(".plain");
      const stick = nearBottom();
      // offset 0 is a catch-up snapshot: it holds the whole reply so far.
      if (f.offset === 0) plain.textContent = f.delta;
      else plain.appendChild(document.createTextNode(f.delta));
      if (stick) toBottom();
    },
    "stream.end"(f) {
      if (f.conversation !== conversation) return;
      setStreaming(null);
      refresh(f.message);
    },
    subscribed(f) {
      if (f.conversation === conversation && !f.streaming) setStreaming(null);
    },
    error(f) {
      if (f.client_id && pending.has(f.client_id)) {
        // Nothing typed is ever lost: give the text back to the composer.
        if (!input.value) input.value = pending.get(f.client_id);
        pending.delete(f.client_id);
      }
      // The code picks a message in the page's language; the detail adds the specifics.
      const key = "tErr" + f.code.split("_").map((w) => w[0].toUpperCase() + w.slice(1)).join("");
      const text = app.dataset[key];
      showError(text ? text + (f.code === "invalid_option" || f.code === "too_long" ? " (" + f.detail + ")" : "") : f.detail);
    },
  };

  function dropFrom(id) {
    // An edit replaced this turn: it and everything after it leave the current thread.
    let el = document.getElementById("m-" + id);
    while (el) {
      const next = el.nextElementSibling;
      el.remove();
      el = next;
    }
  }

  function refreshSidebar() {
    const listEl = $("#conversation-list");
    if (!listEl || listEl.dataset.archived === "1") return;
    htmx.ajax("GET", "/conversations/", { target: listEl, swap: "innerHTML" });
  }

  // --- the socket (htmx ws extension) ---------------------------------------------------
  app.addEventListener("htmx:wsConnecting", () => setStatus("connecting"));
  app.addEventListener("htmx:wsOpen", (e) => {
    socket = e.detail.socketWrapper;
    setStatus("online");
    if (errorBox.textContent === t("tooManySockets")) showError("");
    // (Re)connected: catch up with anything streaming in this conversation.
    if (conversation) send({ type: "chat.subscribe", conversation: conversation });
    if (lastClose === 1012) {
      // A restarting server acknowledges every frame it took before closing with 1012:
      // a message it did not acknowledge never arrived, so it goes again.
      pending.forEach((content, clientId) => {
        send({
          type: "chat.send", conversation: conversation, content: content, client_id: clientId,
          model: model(),
        });
      });
    }
    lastClose = 0;
  });
  app.addEventListener("htmx:wsClose", (e) => {
    const code = e.detail.event && e.detail.event.code;
    lastClose = code;
    if (code === 4429) {
      // The person has the most sockets the server allows open elsewhere: say so, and try
      // again slowly (a fast retry would only spend this address's handshakes).
      setStatus("crowded");
      showError(t("tooManySockets"));
      setTimeout(() => e.detail.socketWrapper.reconnect(), 45000 + Math.random() * 30000);
      return;
    }
    setStatus("offline");
    // The extension itself retries only 1006/1011/1012/1013; any other close (a server
    // restart's 1001, a proxy's 1000, the server's 1008 for a socket that fell behind) must
    // come back too; on open the page subscribes again and catches up.
    if ([1006, 1011, 1012, 1013].indexOf(code) < 0) {
      setTimeout(() => e.detail.socketWrapper.reconnect(), 500 + Math.random() * 1500);
    }
  });
  app.addEventListener("htmx:wsBeforeMessage", (e) => {
    e.preventDefault(); // our frames are JSON, not HTML for htmx to swap
    let frame;
    try { frame = JSON.parse(e.detail.message); } catch (_) { return; }
    const handle = handlers[frame.type];
    if (handle) handle(frame);
  });
  composer.addEventListener("htmx:wsConfigSend", (e) => {
    const content = input.value;
    if (!content.trim() || streaming) {
      e.preventDefault();
      return;
    }
    const clientId = "c" + Date.now().toString(36) + (seq++).toString(36);
    pending.set(clientId, content);
    e.detail.messageBody = JSON.stringify({
      type: "chat.send", conversation: conversation, content: content, client_id: clientId,
      model: model(),
    });
    input.value = "";
    showError("");
    autosize();
  });

  if (picker) {
    picker.addEventListener("change", () => {
      if (pickerNote) pickerNote.textContent = picker.selectedOptions[0].dataset.description;
      input.focus();
    });
  }

  // --- composer ---------------------------------------------------------------------------
  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 240) + "px";
  }
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => {
    if (conversation) send({ type: "chat.stop", conversation: conversation });
  });

  // --- per-message actions (delegated: messages come and go) ------------------------------
  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button");
    if (!btn) return;
    if (btn.matches("[data-copy]")) {
      const pre = btn.closest(".code-block") && btn.closest(".code-block").querySelector("pre");
      if (pre) copy(pre.textContent, btn);
    } else if (btn.matches("[data-copy-message]")) {
      const body = btn.closest(".message").querySelector(".message-body");
      copy(body.innerText.trim(), btn);
    } else if (btn.matches("[data-regenerate]")) {
      if (conversation && !streaming) send({ type: "chat.regenerate", conversation: conversation });
    } else if (btn.matches("[data-edit]")) {
      startEdit(btn.closest(".message"));
    } else if (btn.matches("[data-toggle-drawer]")) {
      toggleDrawer();
    } else if (btn.matches("[data-delete]") && btn.closest(".conversation-item")) {
      const item = btn.closest(".conversation-item");
      item.addEventListener("htmx:afterRequest", () => {
        if (item.dataset.conversation === conversation) window.location.assign("/");
      }, { once: true });
    }
  });

  function copy(text, btn) {
    const done = () => {
      const old = btn.textContent;
      btn.textContent = t("copied");
      setTimeout(() => { btn.textContent = old; }, 1200);
    };
    if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, () => {});
  }

  function startEdit(msg) {
    if (!msg || msg.querySelector(".edit-form") || streaming) return;
    const body = msg.querySelector(".message-body");
    const form = document.createElement("form");
    form.className = "edit-form";
    const area = document.createElement("textarea");
    area.value = body.innerText.trim();
    area.setAttribute("aria-label", t("editLabel"));
    area.rows = 3;
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "btn btn-primary";
    save.textContent = t("save");
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "btn";
    cancel.textContent = t("cancel");
    form.append(area, save, cancel);
    body.hidden = true;
    body.after(form);
    area.focus();
    cancel.addEventListener("click", () => { form.remove(); body.hidden = false; });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!area.value.trim()) return;
      send({ type: "chat.edit", conversation: conversation, message: msg.dataset.message, content: area.value });
      form.remove();
      body.hidden = false;
    });
  }

  // --- phone drawer -----------------------------------------------------------------------
  const drawerButton = $("[data-toggle-drawer]");
  const scrim = $("[data-close-drawer]");
  function toggleDrawer(force) {
    const open = typeof force === "boolean" ? force : !app.classList.contains("drawer-open");
    app.classList.toggle("drawer-open", open);
    drawerButton.setAttribute("aria-expanded", String(open));
    scrim.hidden = !open;
    if (open) $("#sidebar a, #sidebar input").focus();
  }
  scrim.addEventListener("click", () => toggleDrawer(false));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && app.classList.contains("drawer-open")) toggleDrawer(false);
  });

  // --- language switcher: submit on change (no inline handlers) ----------------------------
  document.querySelectorAll("select[data-autosubmit]").forEach((sel) => {
    sel.addEventListener("change", () => sel.form.submit());
  });

  // --- long conversations: keep the reading position when older messages load above --------
  let anchor = null;
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    if (e.detail.target && e.detail.target.matches("[data-older]")) {
      anchor = scroller.scrollHeight - scroller.scrollTop;
    }
  });
  document.body.addEventListener("htmx:afterSettle", () => {
    if (anchor !== null) {
      scroller.scrollTop = scroller.scrollHeight - anchor;
      anchor = null;
    }
  });

  // First paint: the newest messages in view, any reply streaming marked.
  const live = $(".message.status-streaming");
  setStreaming(live ? live.dataset.message : null);
  toBottom();
  autosize();
})();

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
  const live = new Set(); // ids of the replies streaming in this conversation (a compare: several)
  const pending = new Map(); // client_id -> text typed (restored if the server refuses it)
  const pendingMode = new Map(); // client_id -> how it was sent (one model, compare, arena)
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
  const streaming = () => live.size > 0;
  const setStreaming = (id, on) => {
    if (id === null) live.clear();
    else if (on === false) live.delete(id);
    else live.add(id);
    stopButton.hidden = !streaming();
    sendButton.hidden = streaming();
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

  function append(el, into) {
    const stick = nearBottom();
    (into || list).appendChild(el);
    const empty = $("#empty-state");
    if (empty) empty.remove();
    if (stick) toBottom();
  }

  function groupOf(id) {
    // A compare group's box (made when its first reply starts): replies side by side.
    let box = document.getElementById("g-" + id);
    if (!box) {
      box = document.createElement("li");
      box.className = "compare-group";
      box.id = "g-" + id;
      box.dataset.group = id;
      const replies = document.createElement("ol");
      replies.className = "compare-replies";
      box.appendChild(replies);
      append(box);
    }
    return box.querySelector(".compare-replies");
  }

  function refreshGroup(id) {
    // Every reply ended (or the vote came): the server renders the group, vote buttons or
    // verdict included, with the models named only once they may be.
    const target = document.getElementById("g-" + id);
    if (!target || !conversation) return;
    htmx.ajax("GET", "/c/" + conversation + "/g/" + id + "/", { target: target, swap: "outerHTML" });
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
      if (f.client_id && pending.has(f.client_id)) {
        pending.delete(f.client_id);
        pendingMode.delete(f.client_id);
      }
      if (f.message.replaces) dropFrom(f.message.replaces);
      // A new turn closes any comparison left without a vote (the server named its models).
      document.querySelectorAll(".compare-group .vote-bar").forEach((bar) => {
        refreshGroup(bar.closest(".compare-group").dataset.group);
      });
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
        const el = bubble(f.message, "assistant", "", f.model);
        if (f.group) {
          const letter = "ABC".charAt(f.slot) || "?";
          el.querySelector(".message-role").textContent = f.model
            ? letter + " " + labelOf(f.model) : t("modelLetter") + " " + letter;
          append(el, groupOf(f.group));
        } else {
          append(el);
        }
      }
      if (picker && f.model && !f.group && picker.value !== f.model && optionOf(f.model)) {
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
      setStreaming(f.message, false);
      const el = document.getElementById("m-" + f.message);
      const box = el && el.closest(".compare-group");
      if (!box) {
        refresh(f.message);
      } else if (!Array.prototype.some.call(box.querySelectorAll(".message"), (m) => live.has(m.dataset.message))) {
        refreshGroup(box.dataset.group); // the last of its replies: the vote comes with it
      }
    },
    "vote.saved"(f) {
      if (f.conversation === conversation) refreshGroup(f.group);
    },
    subscribed(f) {
      if (f.conversation === conversation && !f.streaming) setStreaming(null);
    },
    error(f) {
      if (f.client_id && pending.has(f.client_id)) {
        // Nothing typed is ever lost: give the text back to the composer.
        if (!input.value) input.value = pending.get(f.client_id);
        pending.delete(f.client_id);
        pendingMode.delete(f.client_id);
      }
      document.querySelectorAll(".vote-bar button:disabled").forEach((b) => { b.disabled = false; });
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
          ...(pendingMode.get(clientId) || { model: model() }),
        });
      });
    }
    lastClose = 0;
  });
  app.addEventListener("htmx:wsClose", (e) => {
    const code = e.detail.event && e.detail.event.code;
    lastClose = code;
    if (code === 4403) {
      // The account was deleted (in another tab): nothing to reconnect to; the reload lands
      // on the login page.
      setStatus("offline");
      window.location.reload();
      return;
    }
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
    if (!content.trim() || streaming()) {
      e.preventDefault();
      return;
    }
    if (compareToggle && compareToggle.checked && compared().length < 2) {
      e.preventDefault();
      showError(t("pickTwo"));
      return;
    }
    const clientId = "c" + Date.now().toString(36) + (seq++).toString(36);
    pending.set(clientId, content);
    pendingMode.set(clientId, mode());
    e.detail.messageBody = JSON.stringify({
      type: "chat.send", conversation: conversation, content: content, client_id: clientId,
      ...pendingMode.get(clientId),
    });
    input.value = "";
    showError("");
    autosize();
  });

  // Compare (two or three models side by side) and Arena (two drawn at random, blind):
  // one or the other, or neither (the picker's model answers alone).
  const compareToggle = $("#compare-toggle");
  const compareModels = $("#compare-models");
  const arenaToggle = $("#arena-toggle");
  const compared = () => Array.prototype.map.call(
    document.querySelectorAll('#compare-models input[name="compare"]:checked'), (b) => b.value);
  function mode() {
    if (arenaToggle && arenaToggle.checked) return { arena: true };
    if (compareToggle && compareToggle.checked) return { models: compared() };
    return { model: model() };
  }
  if (compareToggle) {
    compareToggle.addEventListener("change", () => {
      compareModels.hidden = !compareToggle.checked;
      if (compareToggle.checked && arenaToggle) arenaToggle.checked = false;
    });
    compareModels.addEventListener("change", (e) => {
      // At most three: the oldest pick gives way to a fourth.
      const picked = document.querySelectorAll('#compare-models input[name="compare"]:checked');
      if (picked.length > 3) e.target.checked = false;
    });
  }
  if (arenaToggle) {
    arenaToggle.addEventListener("change", () => {
      if (arenaToggle.checked && compareToggle) {
        compareToggle.checked = false;
        compareModels.hidden = true;
      }
    });
  }

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
      if (conversation && !streaming()) send({ type: "chat.regenerate", conversation: conversation });
    } else if (btn.matches("[data-vote]")) {
      if (conversation) {
        btn.closest(".vote-bar").querySelectorAll("button").forEach((b) => { b.disabled = true; });
        send({ type: "chat.vote", conversation: conversation, group: btn.dataset.group, winner: btn.dataset.vote });
      }
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
    if (!msg || msg.querySelector(".edit-form") || streaming()) return;
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
  setStreaming(null);
  document.querySelectorAll(".message.status-streaming").forEach((el) => setStreaming(el.dataset.message));
  toBottom();
  autosize();
})();

// Quorum CI dashboard: the page's <main> is replaced by what the server sends on its live
// stream (Server-Sent Events). Everything the server sends is HTML it escaped; nothing here
// builds markup from data. The only other job: approving a gate with a NIP-07 signer.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var state = document.getElementById("live-state");
  function say(text, cls) { if (state) { state.textContent = text; state.className = cls; } }

  function atBottom(el) { return el && el.scrollTop + el.clientHeight >= el.scrollHeight - 8; }

  function wireSigner() {
    var buttons = document.querySelectorAll("button.nip07[data-verdict]");
    for (var i = 0; i < buttons.length; i++) {
      var button = buttons[i];
      if (!window.nostr || typeof window.nostr.signEvent !== "function") { continue; }
      button.hidden = false;
      button.onclick = approve;
    }
  }

  function approve(event) {
    var button = event.currentTarget;
    var out = button.parentNode.querySelector(".nip07-result");
    var template = JSON.parse(button.getAttribute("data-verdict"));
    template.created_at = Math.floor(Date.now() / 1000);
    button.disabled = true;
    Promise.resolve(window.nostr.signEvent(template)).then(function (signed) {
      return fetch("/verdict", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(signed) });
    }).then(function (response) {
      return response.text().then(function (text) { out.textContent = text; button.disabled = response.ok; });
    }).catch(function (err) { out.textContent = "not signed: " + err; button.disabled = false; });
  }

  wireSigner();
  // A signer extension may load after the page: it can ask for the buttons again.
  window.quorumUi = { wireSigner: wireSigner };
  if (!main || !main.getAttribute("data-live") || !window.EventSource) { say("", ""); return; }
  var source = null;
  function connect() {
    source = new EventSource(main.getAttribute("data-live"));
    source.onopen = function () { say("live", "on"); };
    source.onerror = function () { say("reconnecting…", "off"); };
    source.onmessage = update;
  }
  // A browser allows few connections per server: a page left (or kept in the back/forward
  // cache) must not keep its stream open, and one brought back opens it again.
  window.addEventListener("pagehide", function () { if (source) { source.close(); source = null; } });
  window.addEventListener("pageshow", function () { if (!source) { connect(); } });
  connect();
  function update(message) {
    var focused = document.activeElement && document.activeElement.id;
    var logs = {};
    var pres = main.querySelectorAll("pre.log[id]");
    for (var i = 0; i < pres.length; i++) { logs[pres[i].id] = atBottom(pres[i]) ? -1 : pres[i].scrollTop; }
    main.innerHTML = message.data;
    pres = main.querySelectorAll("pre.log[id]");
    for (var j = 0; j < pres.length; j++) {
      var kept = logs[pres[j].id];
      pres[j].scrollTop = (kept === undefined || kept === -1) ? pres[j].scrollHeight : kept;
    }
    if (focused) { var el = document.getElementById(focused); if (el) { el.focus(); } }
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
    wireSigner();
  }
})();

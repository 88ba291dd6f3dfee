/* trackpipe first-party tracker: page views, clicks on marked elements, consent.
 *   <script async src="https://collect.example.com/t.js" data-site="shop"></script>
 *   <a href="/sale" data-tp-click="hero-banner">…</a>
 *   trackpipe.track("add_to_cart", {product_id: "p1"}); trackpipe.consent(["analytics"]);
 * Reference: docs/collector.md "JavaScript tracker". */
(function (w, d) {
  "use strict";
  if (w.trackpipe && w.trackpipe.version) return;
  var script = d.currentScript || d.querySelector("script[data-site]");
  var cfg = {
    site: script && script.getAttribute("data-site"),
    endpoint: (script && script.getAttribute("data-endpoint")) ||
      (script ? new URL(script.src, w.location.href).origin : "") + "/collect",
    auto: !script || script.getAttribute("data-auto") !== "false",
    requireConsent: !!script && script.getAttribute("data-require-consent") === "true",
    cookieDays: 390
  };
  var VID = "_tp_vid", CONSENT = "_tp_consent", OPTOUT = "_tp_optout";
  var queue = [], held = [], timer = null;

  function readCookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function writeCookie(name, value, days) {
    d.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + Math.round(days * 86400) +
      "; Path=/; SameSite=Lax" + (w.location.protocol === "https:" ? "; Secure" : "");
  }
  function randomId() {
    var b = new Uint8Array(16), s = "";
    (w.crypto || w.msCrypto).getRandomValues(b);
    for (var i = 0; i < b.length; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }
  function consent() {
    var c = readCookie(CONSENT);
    return c === null ? null : c.split(".").filter(Boolean);
  }
  function visitorId() {
    // Our own first-party id: it survives third-party cookie blocking of the collector's.
    var c = consent();
    if (c !== null && c.indexOf("analytics") < 0) return "";
    var v = readCookie(VID);
    if (!v || !/^[0-9a-f]{32}$/.test(v)) v = randomId();
    writeCookie(VID, v, cfg.cookieDays);
    return v;
  }
  function send(body) {
    try {
      if (navigator.sendBeacon &&
          navigator.sendBeacon(cfg.endpoint, new Blob([body], {type: "text/plain"}))) return;
    } catch (e) { /* fall through to fetch */ }
    if (w.fetch) {
      w.fetch(cfg.endpoint, {method: "POST", body: body, keepalive: true,
        credentials: "include", mode: "no-cors", headers: {"Content-Type": "text/plain"}});
    }
  }
  function flush() {
    timer = null;
    if (!queue.length) return;
    var now = Date.now();
    for (var i = 0; i < queue.length; i++) queue[i].sent_at = now;
    send(JSON.stringify(queue));
    queue = [];
  }
  function track(type, props, extra) {
    if (readCookie(OPTOUT) === "1" || !cfg.site) return;
    var c = consent();
    if (cfg.requireConsent && c === null) { held.push([type, props, extra]); return; }
    // Within the collector's rules (docs/collector.md), so no event is refused for its shape.
    type = String(type).toLowerCase().replace(/[^a-z0-9_]+/g, "_").slice(0, 64);
    var e = {type: type, site: cfg.site, url: w.location.href.slice(0, 4096),
      referrer: d.referrer.slice(0, 4096), title: d.title.slice(0, 256), ts: Date.now(),
      locale: (navigator.language || "").slice(0, 35),
      visitor_id: visitorId(), props: props || {}};
    try { e.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (x) {}
    if (c !== null) e.consent = c;
    if (api.userId) e.user_id = api.userId;
    for (var k in extra || {}) e[k] = extra[k];
    queue.push(e);
    if (queue.length >= 20) flush(); else if (!timer) timer = setTimeout(flush, 0);
  }
  function onClick(ev) {
    var el = ev.target;
    while (el && el !== d && !(el.getAttribute && el.getAttribute("data-tp-click"))) {
      el = el.parentNode;
    }
    if (!el || el === d) return;
    track("click", {name: el.getAttribute("data-tp-click"), href: el.getAttribute("href") || "",
      text: (el.textContent || "").trim().slice(0, 100)});
    flush(); // the click may navigate away before the next tick
  }

  var api = {
    version: "1",
    page: function (props) { track("page_view", props); },
    track: track,
    flush: flush,
    identify: function (userId) { api.userId = userId; },
    consent: function (categories) {
      if (categories === undefined) return consent();
      categories = categories.map(function (c) { return String(c).toLowerCase(); });
      writeCookie(CONSENT, categories.join("."), cfg.cookieDays);
      if (categories.indexOf("analytics") < 0) writeCookie(VID, "", 0);
      var pending = held; held = [];
      for (var i = 0; i < pending.length; i++) track.apply(null, pending[i]);
      return categories;
    },
    optOut: function () {
      writeCookie(OPTOUT, "1", cfg.cookieDays * 5);
      writeCookie(VID, "", 0);
      queue = []; held = [];
      return w.fetch && w.fetch(cfg.endpoint.replace(/\/collect$/, "/optout"),
        {method: "POST", credentials: "include", mode: "no-cors", keepalive: true});
    },
    optIn: function () {
      writeCookie(OPTOUT, "", 0);
      return w.fetch && w.fetch(cfg.endpoint.replace(/\/collect$/, "/optin"),
        {method: "POST", credentials: "include", mode: "no-cors", keepalive: true});
    },
    configure: function (options) { for (var k in options) cfg[k] = options[k]; }
  };
  var pending = w.trackpipe && w.trackpipe.q; // calls made before the script loaded
  w.trackpipe = api;
  d.addEventListener("click", onClick, true);
  d.addEventListener("visibilitychange", function () { if (d.hidden) flush(); });
  w.addEventListener("pagehide", flush);
  if (pending) for (var i = 0; i < pending.length; i++) api[pending[i][0]].apply(api, pending[i].slice(1));
  if (cfg.auto) api.page();
})(window, document);

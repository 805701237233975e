// tasklease console: the parts of a page that update themselves, without reloading it, and a
// sign-in form that will not send a secret in clear.
// An element with data-refresh="URL" has its content replaced every data-interval
// milliseconds (default 2000) with the HTML fragment the console serves at URL. The
// fragments are rendered and escaped by the server; nothing here builds HTML.
(function () {
  "use strict";
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    fetch(url, {
      credentials: "same-origin",
      headers: { "X-Console-Fragment": "1" },
      cache: "no-store",
    })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload(); // the session ended: the page sends us to sign in
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          el.innerHTML = html;
          el.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {
        /* the broker is away for a moment: try again on the next tick */
      });
  }
  // A page reached over plain HTTP at a host beyond this machine (a proxy on the broker's
  // machine speaking plain HTTP to the browser makes every client look local to the
  // broker): a secret typed into it would cross the network in clear. The broker refuses
  // such a form when it arrives (its Origin says where it came from); this keeps the
  // secret from being sent at all. Loopback as rules.cleartext.is_loopback_host reads it.
  function loopback(host) {
    return host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
  }
  function guardClearText() {
    if (window.location.protocol !== "http:" || loopback(window.location.hostname)) return;
    var forms = document.querySelectorAll("form[data-secret]");
    Array.prototype.forEach.call(forms, function (form) {
      Array.prototype.forEach.call(form.elements, function (el) {
        el.disabled = true;
      });
    });
    var warning = document.getElementById("clear-text");
    if (warning) warning.hidden = false;
  }
  function start() {
    guardClearText();
    var live = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(live, function (el) {
      var every = parseInt(el.getAttribute("data-interval") || "2000", 10);
      window.setInterval(function () {
        if (!document.hidden) refresh(el);
      }, Math.max(every, 500));
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

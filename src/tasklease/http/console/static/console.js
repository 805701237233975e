// tasklease console: the parts of a page that update themselves, without reloading it.
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
  function start() {
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

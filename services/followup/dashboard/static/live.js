// Live pages: when the server says what this page shows has changed, fetch the page again and swap its
// live parts in place: each [data-live-part] (by id), or else the [data-live] element itself. Forms
// outside them keep what was typed. Without JavaScript the page is the same, only not live.
(function () {
  var region = document.querySelector("[data-live]");
  if (!region || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var source = new EventSource(region.getAttribute("data-live"));
  source.addEventListener("changed", function () {
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var parts = document.querySelectorAll("[data-live-part]");
        if (parts.length === 0) parts = [region];
        Array.prototype.forEach.call(parts, function (part) {
          var fresh = part.id ? doc.getElementById(part.id) : doc.querySelector("[data-live]");
          if (fresh) part.innerHTML = fresh.innerHTML;
        });
        if (status) status.textContent = "Updated at " + new Date().toLocaleTimeString();
      });
  });
})();

// Live pages: when the server says what this page shows has changed, fetch the page again and swap its
// live region in place (forms outside the region keep what was typed). Without JavaScript the page is
// the same, only not live.
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
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (!fresh) return;
        region.innerHTML = fresh.innerHTML;
        if (status) status.textContent = "Updated at " + new Date().toLocaleTimeString();
      });
  });
})();

// The status page works without this script. With it: the page reloads every data-refresh
// seconds (not while hidden or while a field has focus), groups stay as the reader opened or
// closed them, and the filter menus apply on change.
(function () {
  "use strict";
  var key = "availmon-groups:" + location.pathname + location.search;
  var groups = Array.prototype.slice.call(document.querySelectorAll("details.group[id]"));
  var saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(key) || "null"); } catch (e) { saved = null; }
  groups.forEach(function (d) {
    if (saved && Object.prototype.hasOwnProperty.call(saved, d.id)) { d.open = saved[d.id]; }
    d.addEventListener("toggle", function () {
      var state = {};
      groups.forEach(function (g) { state[g.id] = g.open; });
      try { sessionStorage.setItem(key, JSON.stringify(state)); } catch (e) { /* private mode */ }
    });
  });
  document.querySelectorAll("form.filters select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  var seconds = Number(document.body.getAttribute("data-refresh"));
  if (seconds > 0) {
    setInterval(function () {
      var busy = document.activeElement && /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
      if (!document.hidden && !busy) { location.reload(); }
    }, seconds * 1000);
  }
})();

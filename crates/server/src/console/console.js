// Steward console: reloads a page when something it shows changes (server-sent events after
// the last event the page was rendered from). The pages are complete without it.
(function () {
  var body = document.body;
  var watch = body.getAttribute("data-watch");
  if (!watch || !window.EventSource) return;
  var after = encodeURIComponent(body.getAttribute("data-after") || "0");
  var url = watch === "*"
    ? "/api/v1/events?type=run_created,run_state_changed,workflow_recovery&after=" + after
    : "/api/v1/runs/" + encodeURIComponent(watch) + "/events?after=" + after;
  var source = new EventSource(url);
  var timer = null;
  function changed() {
    if (timer) return;
    source.close();
    timer = setTimeout(function () { location.reload(); }, 200);
  }
  ["run_created", "run_state_changed", "workflow_recovery", "step_attempt_started", "step_attempt_finished", "human_decision"].forEach(function (t) {
    source.addEventListener(t, changed);
  });
})();

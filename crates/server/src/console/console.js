// Steward console: reloads a run's page when the run records something new (server-sent
// events, after the last event the page shows). The pages are complete without it.
(function () {
  var body = document.body;
  var run = body.getAttribute("data-watch");
  if (!run || !window.EventSource) return;
  var after = body.getAttribute("data-after") || "0";
  var source = new EventSource("/api/v1/runs/" + encodeURIComponent(run) + "/events?after=" + encodeURIComponent(after));
  var timer = null;
  function changed() {
    if (timer) return;
    source.close();
    timer = setTimeout(function () { location.reload(); }, 200);
  }
  ["run_state_changed", "workflow_recovery", "step_attempt_started", "step_attempt_finished", "human_decision"].forEach(function (t) {
    source.addEventListener(t, changed);
  });
})();

// dockmaster serve: the live parts of the release page. Everything works without this
// file; it only streams what would otherwise need a reload (server-sent events, same
// origin, behind the session cookie). Served from the binary; nothing is fetched.
(function () {
  "use strict";
  var MAX_LINES = 2000;

  function append(pre, line) {
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(line + "\n"));
    while (pre.childNodes.length > MAX_LINES) {
      pre.removeChild(pre.firstChild);
    }
    if (atEnd) {
      pre.scrollTop = pre.scrollHeight;
    }
  }

  // The status facts, re-rendered by the server (escaped there) whenever they change.
  var status = document.getElementById("status");
  if (status) {
    new EventSource("/events/status").addEventListener("status", function (e) {
      status.innerHTML = e.data;
    });
  }

  // The live release's log, followed.
  var logs = document.getElementById("logs");
  if (logs) {
    new EventSource("/events/logs").addEventListener("line", function (e) {
      append(logs, e.data);
    });
  }

  // A job's output from where the page left off, then its end.
  var out = document.getElementById("job-output");
  if (out && out.dataset.state === "running") {
    var state = document.getElementById("job-state");
    var code = document.getElementById("job-code");
    var es = new EventSource("/jobs/" + out.dataset.job + "/events?from=" + out.dataset.next);
    es.addEventListener("line", function (e) {
      append(out, e.data);
    });
    es.addEventListener("end", function (e) {
      var end = JSON.parse(e.data);
      state.textContent = end.state;
      state.className = "state-" + end.state;
      code.textContent = " (exit code " + end.exit_code + ")";
      out.dataset.state = end.state;
      es.close();
    });
  }
})();

// runjournal's page: the one script. It follows a live run's new events (server-sent
// events) and adds them, as the server rendered and escaped them, to the timeline.
"use strict";

function follow(timeline) {
  const source = new EventSource(timeline.dataset.live);
  const status = document.getElementById("status");
  const note = document.getElementById("live");
  source.addEventListener("events", (e) => {
    timeline.insertAdjacentHTML("beforeend", e.data);
  });
  source.addEventListener("status", (e) => {
    if (status) {
      status.textContent = e.data;
      status.className = "badge " + e.data;
    }
  });
  source.addEventListener("end", (e) => {
    source.close();
    if (note) note.textContent = "the run is " + e.data + ": reload for its whole page";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const timeline = document.getElementById("timeline");
  if (timeline && timeline.dataset.live) follow(timeline);
});

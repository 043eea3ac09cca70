// Live traffic charts: uPlot (served by the admin from static/vendor, installed by `make vendor`)
// over the admin's sampled traffic (the same answer as GET /api/v1/stats).
//
// Each <section data-traffic-scope="..."> holds chart slots ([data-chart="rates" | "latency" |
// "members"]). Every sampling interval the section asks for its scope's whole window again (at
// most a few hundred points a series: simpler than merging, and a member that appears or leaves
// is drawn at once) and redraws. Each slot records how many points it drew (data-points) and
// when (data-drawn), which is what a reader or a test can check.
(function () {
  "use strict";

  const COLORS = ["#2f6fb3", "#d9822b", "#c23030", "#0f9960", "#8f398f", "#5c7080", "#a67908",
    "#137cbd", "#db2c6f", "#29a634"];
  const CHARTS = {
    rates: {
      title: "Requests per second",
      lines: [["rps", "requests/s", "#2f6fb3"], ["rate_4xx", "4xx/s", "#d9822b"],
        ["rate_5xx", "5xx/s", "#c23030"]],
    },
    latency: {
      title: "Latency (ms)",
      scale: 1000,
      lines: [["p50", "p50", "#0f9960"], ["p95", "p95", "#d9822b"], ["p99", "p99", "#c23030"]],
    },
  };

  function lineSeries(label, stroke) {
    return { label: label, stroke: stroke, width: 2, spanGaps: false,
      value: function (u, v) { return v == null ? "–" : v.toFixed(v < 10 ? 2 : 0); } };
  }

  function clock(ts) {
    return new Date(ts * 1000).toLocaleTimeString();
  }

  function chartFor(slot, spec, data, span) {
    const series = [{ value: function (u, v) { return v == null ? "" : clock(v); } }];
    spec.lines.forEach(function (line) { series.push(lineSeries(line[1], line[2])); });
    const opts = {
      width: Math.max(300, slot.clientWidth || 600), height: 200, series: series,
      scales: {
        // always the whole window, ending at the last sample: a young window reads as such
        x: { time: true, range: function (u, min, max) {
          const end = max == null ? Date.now() / 1000 : max;
          return [end - span, end];
        } },
        // from zero: a rate or a latency read at a glance, not magnified noise
        y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } },
      },
      axes: [{}, { size: 60 }],
      legend: { live: true },
    };
    return new uPlot(opts, data, slot.querySelector(".plot"));
  }

  function columns(answer, spec) {
    const scale = spec.scale || 1;
    const data = [answer.times];
    spec.lines.forEach(function (line) {
      const values = line.series ? line.series : answer.series[line[0]];
      data.push(values.map(function (v) { return v == null ? null : v * scale; }));
    });
    return data;
  }

  function membersSpec(answer) {
    const names = Object.keys(answer.members || {}).sort();
    return {
      title: "Requests per second, per member",
      key: names.join(" "),
      lines: names.map(function (name, i) {
        const line = [name, name, COLORS[i % COLORS.length]];
        line.series = answer.members[name].rps;
        return line;
      }),
    };
  }

  function draw(slot, answer) {
    const kind = slot.dataset.chart;
    const spec = kind === "members" ? membersSpec(answer) : CHARTS[kind];
    const data = columns(answer, spec);
    const key = spec.key || kind;
    if (!slot.chart || slot.chartKey !== key) {
      if (slot.chart) { slot.chart.destroy(); }
      slot.chart = chartFor(slot, spec, data, answer.window);
      slot.chartKey = key;
    } else {
      slot.chart.setData(data);
    }
    const empty = slot.querySelector(".empty");
    if (empty) { empty.hidden = answer.times.length > 0; }
    slot.dataset.points = String(answer.times.length);
    slot.dataset.drawn = String(Date.now());
  }

  function watch(section) {
    const url = section.dataset.trafficUrl + "?scope=" + encodeURIComponent(section.dataset.trafficScope);
    const slots = section.querySelectorAll("[data-chart]");
    const note = section.querySelector(".traffic-note");
    let every = 5000;

    function poll() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.json();
        })
        .then(function (answer) {
          every = Math.max(1000, answer.interval * 1000);
          slots.forEach(function (slot) { draw(slot, answer); });
          if (note) {
            note.textContent = "sampled every " + answer.interval + " s, last " +
              Math.round(answer.window / 60) + " min";
          }
        })
        .catch(function (err) {
          if (note) { note.textContent = "traffic figures unavailable: " + err.message; }
        })
        .finally(function () { setTimeout(poll, every); });
    }
    poll();
  }

  function start() {
    if (typeof uPlot === "undefined") {
      document.querySelectorAll(".traffic-note").forEach(function (note) {
        note.textContent = "charts unavailable: run `make vendor` to install uPlot";
      });
      return;
    }
    document.querySelectorAll("section[data-traffic-scope]").forEach(watch);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

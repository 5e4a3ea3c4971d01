//! `--find-capacity`: runs the scenario with more and more subscribers until delivery or
//! latency fails, and draws the ramp as a hand-written SVG.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::report::Report;
use crate::scenario::run;

/// Pause between steps so the server has closed the previous step's peers.
const STEP_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Subscribers per room in this step.
    pub subscribers: usize,
    /// Whether delivery, latency and joins met the limits.
    pub passed: bool,
    /// The step's report.
    pub report: Report,
}

/// The ramp and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// Every step run, in order.
    pub steps: Vec<Step>,
    /// Consumers of the last passing step.
    pub capacity_consumers: Option<usize>,
    /// Consumers of the last passing step per server worker (one worker is one core).
    pub consumers_per_core: Option<f64>,
    /// Why the ramp stopped.
    pub stopped_because: String,
}

/// Whether a step meets the limits of `cfg`.
pub fn passes(cfg: &Config, r: &Report) -> bool {
    r.peers_failed == 0
        && r.delivery_ratio >= cfg.min_delivery
        && r.latency_p99_ms.is_some_and(|p| p <= cfg.max_p99_ms)
}

/// Subscribers per room of the step after one with `current`.
pub fn next_step(cfg: &Config, current: usize) -> usize {
    let next = match cfg.step_add {
        Some(add) => current + add.max(1),
        None => current.max(1) * 2,
    };
    next.min(cfg.max_subscribers)
}

/// Runs the ramp. Each step is a full run (join, settle, `--step-duration` seconds).
pub fn find_capacity(cfg: &Config) -> anyhow::Result<Capacity> {
    let mut subscribers = cfg.start_subscribers.unwrap_or(cfg.subscribers).max(1);
    let mut steps = Vec::new();
    let stopped_because = loop {
        let mut step_cfg = cfg.clone();
        step_cfg.subscribers = subscribers;
        step_cfg.duration = cfg.step_duration;
        let report = run(&step_cfg)?;
        let passed = passes(cfg, &report);
        eprintln!(
            "step: {} subscribers/room, {} consumers: delivery {:.3} %, p99 {} ms, server CPU {} % → {}",
            subscribers,
            report.consumers,
            report.delivery_ratio * 100.0,
            report
                .latency_p99_ms
                .map_or("-".to_owned(), |p| format!("{p:.2}")),
            report
                .server_cpu_percent
                .map_or("-".to_owned(), |c| format!("{c:.0}")),
            if passed { "pass" } else { "FAIL" }
        );
        steps.push(Step {
            subscribers,
            passed,
            report,
        });
        if !passed {
            break "a step failed the delivery, latency or join limits".to_owned();
        }
        let next = next_step(cfg, subscribers);
        if next <= subscribers {
            break format!("reached --max-subscribers {}", cfg.max_subscribers);
        }
        subscribers = next;
        std::thread::sleep(STEP_PAUSE);
    };
    let last = steps.iter().rev().find(|s| s.passed);
    Ok(Capacity {
        capacity_consumers: last.map(|s| s.report.consumers),
        consumers_per_core: last.map(|s| {
            s.report.consumers as f64 / s.report.server_workers.unwrap_or(1).max(1) as f64
        }),
        stopped_because,
        steps,
    })
}

/// One plotted panel: a title, a unit and a value per step.
struct Series<'a> {
    title: &'a str,
    values: Vec<Option<f64>>,
    min: f64,
    max: f64,
    limit: Option<f64>,
    /// Logarithmic axis (latency spans orders of magnitude once a step fails).
    log: bool,
}

impl Series<'_> {
    /// Position of `v` on the axis, 0 at `min` and 1 at `max`.
    fn fraction(&self, v: f64) -> f64 {
        let v = v.clamp(self.min, self.max);
        if self.log {
            (v.ln() - self.min.ln()) / (self.max.ln() - self.min.ln()).max(f64::EPSILON)
        } else {
            (v - self.min) / (self.max - self.min).max(f64::EPSILON)
        }
    }

    /// The value at axis position `f` (0..1).
    fn value_at(&self, f: f64) -> f64 {
        if self.log {
            (self.min.ln() + f * (self.max.ln() - self.min.ln())).exp()
        } else {
            self.min + f * (self.max - self.min)
        }
    }
}

/// Draws delivery (%), p99 latency (ms) and server CPU (%) against the number of
/// consumers, one panel each, as a standalone SVG document.
pub fn plot_svg(cap: &Capacity, cfg: &Config) -> String {
    const W: f64 = 760.0;
    const PANEL_H: f64 = 170.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 56.0;
    const GAP: f64 = 45.0;
    let xs: Vec<f64> = cap
        .steps
        .iter()
        .map(|s| s.report.consumers as f64)
        .collect();
    let x_max = xs.iter().copied().fold(1.0, f64::max);
    let delivery: Vec<Option<f64>> = cap
        .steps
        .iter()
        .map(|s| Some(s.report.delivery_ratio * 100.0))
        .collect();
    let d_min = delivery
        .iter()
        .flatten()
        .copied()
        .fold(cfg.min_delivery * 100.0 - 0.5, f64::min)
        .floor();
    let p99: Vec<Option<f64>> = cap.steps.iter().map(|s| s.report.latency_p99_ms).collect();
    let cpu: Vec<Option<f64>> = cap
        .steps
        .iter()
        .map(|s| s.report.server_cpu_percent)
        .collect();
    let series = [
        Series {
            title: "delivery (%)",
            values: delivery,
            min: d_min,
            max: 100.0,
            limit: Some(cfg.min_delivery * 100.0),
            log: false,
        },
        Series {
            title: "latency p99 (ms, log scale)",
            max: p99
                .iter()
                .flatten()
                .copied()
                .fold(cfg.max_p99_ms * 1.5, f64::max),
            values: p99,
            min: 0.1,
            limit: Some(cfg.max_p99_ms),
            log: true,
        },
        Series {
            title: "server CPU (% of one core)",
            max: cpu.iter().flatten().copied().fold(100.0, f64::max),
            values: cpu,
            min: 0.0,
            limit: None,
            log: false,
        },
    ];
    let height = TOP + series.len() as f64 * (PANEL_H + GAP) + 20.0;
    let plot_w = W - LEFT - RIGHT;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15">capacity of {}: {} publisher(s)/room, {} room(s), video {} kbit/s{}</text>"#,
        cfg.urls
            .join(", ")
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
        cfg.publishers,
        cfg.rooms,
        cfg.video_kbps,
        if cfg.simulcast { " simulcast" } else { "" }
    );
    for (i, s) in series.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + GAP);
        let bottom = top + PANEL_H;
        let x = |v: f64| LEFT + v / x_max * plot_w;
        let y = |v: f64| bottom - s.fraction(v) * PANEL_H;
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            top - 6.0,
            s.title
        );
        for frac in [0.0, 0.5, 1.0] {
            let v = s.value_at(frac);
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{v:.1}</text>"#,
                LEFT - 6.0,
                y(v) + 4.0
            );
        }
        if let Some(limit) = s.limit {
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#d33" stroke-dasharray="5,4"/>"##,
                LEFT + plot_w,
                y(limit)
            );
        }
        let points: Vec<String> = xs
            .iter()
            .zip(&s.values)
            .filter_map(|(&cx, v)| v.map(|v| format!("{:.1},{:.1}", x(cx), y(v))))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#1f6fb4" stroke-width="2"/>"##,
            points.join(" ")
        );
        for ((&cx, v), step) in xs.iter().zip(&s.values).zip(&cap.steps) {
            if let Some(v) = v {
                let color = if step.passed { "#1f6fb4" } else { "#d33" };
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{} consumers: {v:.2}</title></circle>"#,
                    x(cx),
                    y(*v),
                    cx
                );
            }
        }
        for &cx in &xs {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{cx}</text>"#,
                x(cx),
                bottom + 14.0
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">consumers</text>"#,
        LEFT + plot_w / 2.0,
        height - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("x").chain(args.iter().copied())).expect("parses")
    }

    fn report(consumers: usize, delivery: f64, p99: Option<f64>) -> Report {
        Report {
            consumers,
            delivery_ratio: delivery,
            latency_p99_ms: p99,
            server_cpu_percent: Some(consumers as f64 / 10.0),
            ..Report::default()
        }
    }

    #[test]
    fn steps_double_or_add_and_stop_at_the_maximum() {
        let doubling = cfg(&["--max-subscribers", "100"]);
        assert_eq!(next_step(&doubling, 10), 20);
        assert_eq!(next_step(&doubling, 80), 100);
        assert_eq!(next_step(&doubling, 100), 100);
        let adding = cfg(&["--step-add", "25"]);
        assert_eq!(next_step(&adding, 10), 35);
    }

    #[test]
    fn pass_needs_delivery_latency_and_joins() {
        let c = cfg(&[]);
        assert!(passes(&c, &report(10, 0.999, Some(5.0))));
        assert!(!passes(&c, &report(10, 0.99, Some(5.0))));
        assert!(!passes(&c, &report(10, 1.0, Some(25.0))));
        assert!(!passes(&c, &report(10, 1.0, None)));
        let mut failed_join = report(10, 1.0, Some(1.0));
        failed_join.peers_failed = 1;
        assert!(!passes(&c, &failed_join));
    }

    #[test]
    fn log_axis_places_decades_evenly() {
        let s = Series {
            title: "t",
            values: vec![],
            min: 0.1,
            max: 1000.0,
            limit: None,
            log: true,
        };
        assert!((s.fraction(0.1)).abs() < 1e-9);
        assert!((s.fraction(10.0) - 0.5).abs() < 1e-9);
        assert!((s.fraction(1e6) - 1.0).abs() < 1e-9);
        assert!((s.value_at(0.25) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn svg_has_a_point_per_step_and_panel() {
        let c = cfg(&[]);
        let cap = Capacity {
            steps: vec![
                Step {
                    subscribers: 10,
                    passed: true,
                    report: report(20, 1.0, Some(2.0)),
                },
                Step {
                    subscribers: 20,
                    passed: false,
                    report: report(40, 0.9, Some(30.0)),
                },
            ],
            capacity_consumers: Some(20),
            consumers_per_core: Some(20.0),
            stopped_because: "test".into(),
        };
        let svg = plot_svg(&cap, &c);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 6);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("latency p99 (ms, log scale)"));
        assert!(svg.contains("#d33"));
    }
}

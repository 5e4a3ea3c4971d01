//! The `ferrosoup-loadtest` command (see `--help`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use ferrosoup_loadtest::{Config, find_capacity, plot_svg, run};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::parse();
    match main_with(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrosoup-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

fn main_with(cfg: &Config) -> anyhow::Result<()> {
    if !cfg.find_capacity {
        let report = run(cfg)?;
        println!("{}", report.table());
        if let Some(path) = &cfg.json {
            write_json(path, &report)?;
        }
        return Ok(());
    }
    let cap = find_capacity(cfg)?;
    let last = cap.steps.iter().rev().find(|s| s.passed);
    match last {
        Some(step) => {
            println!("last passing step:\n{}", step.report.table());
            println!(
                "capacity: {} consumers ({} subscribers/room) with {} server worker(s) → {:.0} consumers per core; stopped because {}",
                step.report.consumers,
                step.subscribers,
                step.report
                    .server_workers
                    .map_or("?".to_owned(), |w| w.to_string()),
                cap.consumers_per_core.unwrap_or(0.0),
                cap.stopped_because
            );
        }
        None => println!("no step passed; stopped because {}", cap.stopped_because),
    }
    if let Some(path) = &cfg.plot {
        std::fs::write(path, plot_svg(&cap, cfg))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &cfg.json {
        // The last passing step's fields at the top level (the same keys as a single run),
        // plus the whole ramp.
        let mut value = match last {
            Some(step) => serde_json::to_value(&step.report)?,
            None => serde_json::json!({}),
        };
        let ramp = serde_json::to_value(&cap)?;
        if let (Some(obj), serde_json::Value::Object(ramp)) = (value.as_object_mut(), ramp) {
            obj.extend(ramp);
        }
        write_json(path, &value)?;
    }
    Ok(())
}

//! The Flight Recorder from the command line: filtered and followed event lists,
//! SQL over the DuckDB mirror, retention (`gc`) and debug bundles.

use crate::outln;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use steward_analytics::{Mirror, Table};
use steward_core::Timestamp;
use steward_core::event::{Actor, Event};
use steward_store::Store;

use crate::args::{EventsArgs, EventsCommand};
use crate::config::Settings;
use crate::{app, output, print_json, print_text};

/// How many events one mirror transaction copies.
fn batch_size() -> u32 {
    std::env::var("STEWARD_MIRROR_BATCH").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1000)
}

/// Brings the DuckDB mirror up to date with the store; returns how many events it copied.
pub(crate) async fn sync_mirror<S: Store>(cfg: &Settings, store: &S) -> Result<usize> {
    // On PostgreSQL nothing else may have made the data directory: the mirror is this machine's.
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create the data directory {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join(steward_analytics::FILE);
    let mut mirror = Mirror::open(&path)?;
    let mut copied = 0;
    loop {
        let batch = store.list_events_since(mirror.watermark()?, batch_size()).await?;
        if batch.is_empty() {
            return Ok(copied);
        }
        mirror.append(&batch)?;
        copied += batch.len();
    }
}

struct Filter {
    event_type: Option<String>,
    actor: Option<Actor>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    job: Option<String>,
}

impl Filter {
    fn from(args: &EventsArgs) -> Result<Filter> {
        let time = |s: &Option<String>, name: &str| -> Result<Option<Timestamp>> {
            s.as_deref()
                .map(|t| {
                    Timestamp::parse_rfc3339(t).ok_or_else(|| {
                        anyhow::anyhow!("--{name} `{t}` is not an RFC 3339 time (e.g. 2026-11-21T10:00:00Z)")
                    })
                })
                .transpose()
        };
        Ok(Filter {
            event_type: args.event_type.clone(),
            actor: args
                .actor
                .as_deref()
                .map(str::parse::<Actor>)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--actor: {e} (human, agent or system)"))?,
            since: time(&args.since, "since")?,
            until: time(&args.until, "until")?,
            job: args.job.clone(),
        })
    }

    fn keeps(&self, e: &Event) -> bool {
        self.event_type.as_ref().is_none_or(|t| &e.event_type == t)
            && self.actor.is_none_or(|a| e.actor == a)
            && self.since.is_none_or(|t| e.ts >= t)
            && self.until.is_none_or(|t| e.ts < t)
            && self.job.as_ref().is_none_or(|j| &e.job_id == j)
    }
}

/// Prints events as a JSON array or as text.
fn print_events(events: &[Event], json: bool) -> Result<()> {
    if json {
        print_json(&Value::Array(events.iter().map(Event::to_json).collect()))
    } else {
        print_text(&output::events_text(events))
    }
}

/// Prints events as they arrive: one JSON object a line, or text. Goes through `print_text` so a
/// closed pipe (`| head`) ends the command quietly instead of panicking.
fn show(events: &[Event], json: bool) -> Result<()> {
    if json {
        let mut lines = String::new();
        for e in events {
            lines.push_str(&serde_json::to_string(&e.to_json())?);
            lines.push('\n');
        }
        print_text(&lines)
    } else {
        print_text(&output::events_text(events))
    }
}

/// `steward events ...`
pub(crate) async fn events(cfg: &Settings, args: &EventsArgs) -> Result<ExitCode> {
    let store = app::open_db_ro(cfg).await?;
    if let Some(EventsCommand::Query { sql, json }) = &args.query {
        let copied = sync_mirror(cfg, &store).await?;
        let table = steward_analytics::query(&cfg.data_dir.join(steward_analytics::FILE), sql)?;
        if *json {
            print_json(&table_json(&table))?;
        } else {
            print_text(&table_text(&table))?;
            eprintln!("({} rows; mirror brought up to date, {copied} new events)", table.rows.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let filter = Filter::from(args)?;
    let Some(run) = &args.run else {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = store.list_events_since(after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            out.extend(page.into_iter().filter(|e| filter.keeps(e)));
        }
        print_events(&out, args.json)?;
        return Ok(ExitCode::SUCCESS);
    };
    store.get_run(run).await?;
    let events: Vec<Event> = store.list_events(run, 0).await?;
    if !args.follow {
        let kept: Vec<Event> = events.into_iter().filter(|e| filter.keeps(e)).collect();
        print_events(&kept, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: print as events arrive (one JSON object a line with --json) until the run stops running.
    let mut last = 0;
    let mut pending = events;
    loop {
        let kept: Vec<Event> = pending.iter().filter(|e| filter.keeps(e)).cloned().collect();
        show(&kept, args.json)?;
        last = pending.last().map_or(last, |e| e.seq);
        let r = store.get_run(run).await?;
        if r.state.is_terminal()
            || r.state == steward_core::state::RunState::Stalled
            || r.state == steward_core::state::RunState::AwaitingUser
        {
            let rest = store.list_events(run, last).await?;
            show(&rest.into_iter().filter(|e| filter.keeps(e)).collect::<Vec<_>>(), args.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        // SQLite has no change notification; a short poll of a read-only connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        pending = store.list_events(run, last).await?;
    }
}

fn table_json(t: &Table) -> Value {
    Value::Array(
        t.rows.iter().map(|r| Value::Object(t.columns.iter().cloned().zip(r.iter().cloned()).collect())).collect(),
    )
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn table_text(t: &Table) -> String {
    let cells: Vec<Vec<String>> = t.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let widths: Vec<usize> = (0..t.columns.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count().min(80)).chain([t.columns[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |vals: Vec<&str>| -> String {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{:<w$}", v.chars().take(80).collect::<String>(), w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut s = line(t.columns.iter().map(String::as_str).collect());
    s.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect()));
    for r in &cells {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// `steward gc`: prune past retention, sparing unfinished runs; the report is recorded first.
pub(crate) async fn gc(cfg: &Settings, dry_run: bool, json: bool) -> Result<ExitCode> {
    let engine = app::engine(cfg).await?;
    let now = steward_runtime::Clock::now(&steward_runtime::SystemClock);
    let policy = cfg.retention();
    let report = engine.store().prune(now, &policy, dry_run).await?;
    if !dry_run && !report.pruned_ids.is_empty() {
        let path = cfg.data_dir.join(steward_analytics::FILE);
        if path.exists() {
            Mirror::open(&path)?.forget(&report.pruned_ids)?;
        }
    }
    if json {
        print_json(&json!({
            "dry_run": dry_run,
            "items_scanned": report.scanned,
            "items_pruned": report.pruned_ids.len(),
            "items_spared": report.spared,
            "bytes_freed": report.bytes,
            "runs_emptied": report.runs_emptied,
        }))?;
    } else {
        let verb = if dry_run { "would prune" } else { "pruned" };
        let pruned = report.pruned_ids.len() as u64;
        outln!(
            "scanned {} events: {verb} {pruned} ({} bytes), spared {} past retention of unfinished runs, kept {} inside retention",
            report.scanned,
            report.bytes,
            report.spared,
            report.scanned.saturating_sub(pruned + report.spared)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward bundle RUN -o FILE`.
pub(crate) async fn bundle(cfg: &Settings, run_id: &str, out: &std::path::Path) -> Result<ExitCode> {
    let store = app::open_db_ro(cfg).await?;
    let run = store.get_run(run_id).await?;
    let attempts = store.list_attempts(run_id).await?;
    let events = store.list_events(run_id, 0).await?;
    let bus = cfg.bus_with(app::artifacts_of(cfg, &store))?;
    // Written beside its name and renamed into place once synced: a bundle exists whole or not.
    let tmp = out.with_extension("tar.partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let (file, written) =
        steward_server::bundle::write(file, &run, &attempts, &events, bus.redactor(), bus.artifacts().as_ref())
            .await
            .with_context(|| format!("cannot write the bundle {}", out.display()))?;
    file.sync_all().with_context(|| format!("cannot write the bundle {}", out.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write the bundle {}", out.display()))?;
    print_text(&format!(
        "{}: {} step attempts, {} events, {} artifacts\n",
        out.display(),
        written.attempts,
        written.events,
        written.artifacts
    ))?;
    Ok(ExitCode::SUCCESS)
}

//! `steward workflow list|show|run|status|progress|cancel`: DireClaw's workflow commands (its
//! spec §6) over Steward's runs, with DireClaw's arguments and its plain `key=value` lines on
//! stdout, so scripts written against DireClaw keep working; `--json` gives Steward's shapes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use steward_core::Timestamp;
use steward_core::workflow::direclaw::{self, Listed, OrchestratorFile};
use steward_store::{Run, Store};

use crate::args::{InputArgs, WorkflowCommand};
use crate::config::Settings;
use crate::{Shown, app, print_json, print_text};

pub(crate) async fn workflow(cfg: &Settings, command: &WorkflowCommand) -> Result<ExitCode> {
    match command {
        WorkflowCommand::List { orchestrator, json } => {
            let o = Orchestrator::find(cfg, orchestrator)?;
            if *json {
                let workflows: Vec<Value> =
                    o.file.workflows.iter().map(|w| json!({"id": w.id, "description": w.description})).collect();
                print_json(&json!({"orchestrator": o.file.id, "file": o.shown(), "workflows": workflows}))?;
            } else {
                print_text(&o.file.workflows.iter().map(|w| format!("{}\n", w.id)).collect::<String>())?;
            }
        }
        WorkflowCommand::Show { orchestrator, workflow, json } => {
            let o = Orchestrator::find(cfg, orchestrator)?;
            let w = o.workflow(workflow)?;
            if *json {
                print_json(&json!({"orchestrator": o.file.id, "file": o.shown(), "workflow": w.entry.to_json()}))?;
            } else {
                print_text(&steward_core::yaml::to_yaml(&w.entry))?;
            }
        }
        WorkflowCommand::Run { orchestrator, workflow, inputs, detach, json } => {
            return run(cfg, orchestrator, workflow, inputs, *detach, *json).await;
        }
        WorkflowCommand::Status { run, json } => {
            let store = app::open_db_ro(cfg).await?;
            let r = store.get_run(run).await?;
            if *json {
                print_json(&crate::status_json(cfg, &store, &r).await?)?;
            } else {
                let keys = r.input_keys();
                print_text(&format!(
                    "run_id={}\nstate={}\nsummary={}\ninput_count={}\ninput_keys={}\n",
                    r.run_id,
                    direclaw::run_state(r.state),
                    one_line(&cfg.redactor().redact(&r.summary).0),
                    keys.len(),
                    keys.join(",")
                ))?;
            }
        }
        WorkflowCommand::Progress { run, json } => {
            let store = app::open_db_ro(cfg).await?;
            let r = store.get_run(run).await?;
            if *json {
                print_json(&crate::progress_json(cfg, &r)?)?;
            } else {
                print_json(&progress(cfg, &r))?;
            }
        }
        WorkflowCommand::Cancel { run, json } => {
            let engine = app::engine(cfg).await?;
            // DireClaw leaves a run that has ended as it is, and says its state: one that ends
            // while this cancels it too.
            let r = match engine.cancel(run, &crate::actor()).await {
                Ok(r) => r,
                Err(e) => match engine.store().get_run(run).await {
                    Ok(r) if r.state.is_terminal() => r,
                    _ => return Err(e.into()),
                },
            };
            if *json {
                print_json(&crate::cancelled_json(cfg, &r))?;
            } else {
                print_text(&format!(
                    "workflow canceled\nrun_id={}\nstate={}\n",
                    r.run_id,
                    direclaw::run_state(r.state)
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `workflow run ORCHESTRATOR WORKFLOW --input k=v`: DireClaw's start, then the run driven to
/// its end in this process as DireClaw's engine drives it (or in the background with
/// `--detach`). Stdout has DireClaw's two lines; Steward's report of the run goes to stderr.
async fn run(
    cfg: &Settings,
    orchestrator: &str,
    workflow: &str,
    pairs: &[String],
    detach: bool,
    json: bool,
) -> Result<ExitCode> {
    let o = Orchestrator::find(cfg, orchestrator)?;
    o.workflow(workflow)?;
    for pair in pairs {
        match pair.split_once('=') {
            None => bail!("--input requires key=value (found `{pair}`)"),
            Some((key, _)) if key.trim().is_empty() => bail!("input key cannot be empty (found `{pair}`)"),
            Some(_) => {}
        }
    }
    let given = InputArgs { inputs: pairs.to_vec(), input_file: None, workflow: Some(workflow.to_owned()) };
    let req = crate::request(cfg, &o.path, &given)?;
    crate::check_agent_clis(&o.path, &req.source)?;
    let engine = crate::booted(cfg).await?;
    let created = engine
        .create_run(req)
        .await
        .with_context(|| format!("cannot start workflow {workflow} of {}", o.path.display()))?;
    let shown = if json {
        Shown::Json
    } else {
        print_text(&format!("workflow started\nrun_id={}\n", created.run_id))?;
        Shown::TextOnStderr
    };
    crate::drive_created(cfg, engine, created, detach, shown).await
}

/// DireClaw's progress snapshot (spec §4.3): camelCase, times in unix seconds, states in its
/// words.
fn progress(cfg: &Settings, r: &Run) -> Value {
    let p = crate::output::progress_of(r);
    let secs = |t: Timestamp| t.millis().div_euclid(1000);
    json!({
        "runId": p.run_id,
        "workflowId": p.workflow_id,
        "state": direclaw::run_state(r.state),
        "inputCount": p.input_count,
        "inputKeys": p.input_keys,
        "currentStepId": p.current_step_id,
        "currentAttempt": p.current_attempt,
        "startedAt": secs(r.started_at.unwrap_or(r.created_at)),
        "updatedAt": secs(r.updated_at),
        "lastProgressAt": secs(r.last_progress_at),
        "summary": cfg.redactor().redact(&p.summary).0,
        "pendingHumanInput": p.pending_human_input,
        "nextExpectedAction": p.next_expected_action,
    })
}

/// A value on one `key=value` line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// An orchestrator file found by its path or its registered id, checked whole.
struct Orchestrator {
    path: PathBuf,
    file: OrchestratorFile,
}

impl Orchestrator {
    /// `name` as a file, else the file of `[direclaw] orchestrators` that declares `name` as
    /// its id.
    fn find(cfg: &Settings, name: &str) -> Result<Orchestrator> {
        let looks_like_a_path = name.contains('/') || name.ends_with(".yaml") || name.ends_with(".yml");
        if Path::new(name).is_file() || looks_like_a_path {
            return Orchestrator::load(Path::new(name));
        }
        let mut declared = Vec::new();
        let mut found = Vec::new();
        // A registered file that cannot be read, or has no id, does not hide the others; it is
        // named if the id is not found.
        let mut unread = Vec::new();
        for path in &cfg.orchestrators {
            match std::fs::read_to_string(path).map(|text| direclaw::orchestrator_id(&text)) {
                Ok(Some(id)) if id == name => found.push(path),
                Ok(Some(id)) => declared.push(id),
                Ok(None) => unread.push(format!("{} declares no `id`, or is not YAML", path.display())),
                Err(e) => unread.push(format!("{} cannot be read: {e}", path.display())),
            }
        }
        match found.as_slice() {
            [path] => Orchestrator::load(path),
            [] => {
                let registered =
                    if declared.is_empty() { "none is".to_owned() } else { format!("{} are", declared.join(", ")) };
                let unread = unread.iter().map(|u| format!("; {u}")).collect::<String>();
                bail!(
                    "no orchestrator `{name}`: it is not a file, and no file listed in `[direclaw] orchestrators` \
                     declares that id ({registered} registered{unread})"
                )
            }
            several => bail!(
                "orchestrator `{name}` is declared by {} files listed in `[direclaw] orchestrators`: {}",
                several.len(),
                several.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn load(path: &Path) -> Result<Orchestrator> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read orchestrator file {}", path.display()))?;
        // Broken YAML and a file that is not an orchestrator's are said at their line too.
        let file = direclaw::read(&text).map_err(|diags| {
            anyhow!("invalid orchestrator file {}:\n{}", path.display(), crate::diagnostics(path, &diags).trim_end())
        })?;
        Ok(Orchestrator { path: path.to_owned(), file })
    }

    fn workflow(&self, id: &str) -> Result<&Listed> {
        self.file.workflows.iter().find(|w| w.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.file.workflows.iter().map(|w| w.id.as_str()).collect();
            anyhow!("invalid workflow id `{id}`: orchestrator `{}` declares {}", self.file.id, ids.join(", "))
        })
    }

    fn shown(&self) -> String {
        std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone()).display().to_string()
    }
}

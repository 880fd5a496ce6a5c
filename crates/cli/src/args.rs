//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Steward: durable, auditable workflows for AI work.
#[derive(Debug, Parser)]
#[command(name = "steward", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Where runs are recorded [default: ./.steward].
    #[arg(long, global = true, env = "STEWARD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The lease length: a running run whose lease was not renewed for this many seconds is
    /// recovered (stalled on start-up, or taken over by a worker) [default: 30].
    #[arg(long = "stall-threshold", global = true, env = "STEWARD_STALL_THRESHOLD_SECS", value_name = "SECS")]
    pub(crate) stall_threshold_secs: Option<u64>,
    /// How often a running run's lease is renewed [default: 5].
    #[arg(long, global = true, env = "STEWARD_HEARTBEAT_SECS", value_name = "SECS", hide = true)]
    pub(crate) heartbeat_secs: Option<u64>,
    /// A PostgreSQL database to record runs in (`postgres://user@host:port/db`) instead of the
    /// embedded SQLite file under the data directory.
    #[arg(long, global = true, env = "STEWARD_DATABASE_URL", value_name = "URL")]
    pub(crate) database_url: Option<String>,
    /// The configuration file [default: ./steward.toml when present].
    #[arg(long, global = true, env = "STEWARD_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a workflow file; exits 0 only if the run completes.
    Run {
        /// The workflow YAML file.
        file: PathBuf,
        #[command(flatten)]
        given: InputArgs,
        /// Start the run in the background and print its id.
        #[arg(long)]
        detach: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Record a run of a workflow file as queued for the workers, and print its id.
    Submit {
        /// The workflow YAML file.
        file: PathBuf,
        #[command(flatten)]
        given: InputArgs,
        /// Print one JSON object instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// Run a run again from one of its steps: a new run that reuses the completed work before
    /// STEP (no command or model call before it runs again) and runs STEP and what follows it.
    Restart {
        /// The run to restart (it is left as it is).
        run: String,
        /// The step to run again from.
        #[arg(long, value_name = "STEP")]
        from: String,
        /// Print the run id and drive it in the background.
        #[arg(long)]
        detach: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A new run of a run's definition with other inputs; with --from, reusing the work before
    /// that step.
    Fork {
        /// The run to fork (it is left as it is).
        run: String,
        /// Reuse the completed work before this step.
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// The inputs to change.
        #[command(flatten)]
        given: InputArgs,
        /// Print the run id and drive it in the background.
        #[arg(long)]
        detach: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run until it stops running, with `run`'s live progress and exit codes. Never writes.
    Wait {
        /// The run id.
        run: String,
        /// Print one JSON object at the end instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Claim runs from the database and drive them until stopped (SIGTERM or Ctrl-C drains).
    Worker(WorkerArgs),
    /// Serve the HTTP API (recovery first, then embedded workers) until stopped.
    Serve(ServeArgs),
    /// Show a run, its inputs and every step attempt. Never writes.
    Status {
        /// The run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's progress snapshot. Never writes.
    Progress {
        /// The run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first. Never writes.
    List {
        /// Only runs in this state (queued, running, stalled, completed, failed, cancelled, ...).
        #[arg(long)]
        state: Option<String>,
        /// At most this many, the newest first (default 50).
        #[arg(long, conflicts_with = "all", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Every run, however many.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Continue a stalled run: completed steps are reused, interrupted ones retried.
    Resume {
        /// The run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer a run that waits for a person (a hard gate or pause point), then continue it.
    Gate {
        /// The run id.
        run: String,
        /// `continue`: go on (at a hard gate, one more pass with a fresh budget); `abort`: fail the
        /// job; `skip`: set the waiting micro-task aside and go on with the next (the job then
        /// completes with issues).
        #[arg(value_enum)]
        decision: GateDecision,
        /// Why, recorded with the decision.
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve an approval step that waits for a decision, then continue the run.
    Approve {
        /// The run id.
        run: String,
        /// The approval step.
        step: String,
        /// A field of the step's form, `key=value`, read by the field's declared type. Repeatable.
        #[arg(long = "field", short = 'f', value_name = "KEY=VALUE")]
        fields: Vec<String>,
        /// Why, recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject an approval step that waits for a decision, then continue the run (by the step's
    /// `on_reject`, or the step fails).
    Reject {
        /// The run id.
        run: String,
        /// The approval step.
        step: String,
        /// Why, recorded with the decision.
        #[arg(long)]
        comment: String,
        /// A field of the step's form, `key=value`. Repeatable.
        #[arg(long = "field", short = 'f', value_name = "KEY=VALUE")]
        fields: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run that has not finished; its running commands are stopped.
    Cancel {
        /// The run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a run's events in order, filter events, follow a live run, or query them with SQL.
    Events(EventsArgs),
    /// Prune events and artifacts past their retention (never those of unfinished runs).
    Gc {
        /// Report what would be pruned, prune nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one archive with everything needed to debug a run.
    Bundle {
        /// The run id.
        run: String,
        /// The archive to write (.tar).
        #[arg(short, long, value_name = "FILE")]
        output: std::path::PathBuf,
    },
    /// Check a workflow file and report every problem with its line, step and field.
    Validate {
        /// The workflow YAML file (or a DireClaw `orchestrator.yaml`: all of its workflows).
        file: PathBuf,
        /// For an orchestrator file: check the one workflow it would run.
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the recovery scan: mark runs whose process died as stalled.
    Recover {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what the tool bus would decide for a command, without running it.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// The micro-task executor: plan a work packet into micro-tasks, or run it.
    #[command(subcommand)]
    Mt(MtCommand),
    /// DireClaw's workflow commands, with its arguments and plain `key=value` output:
    /// ORCHESTRATOR is an `orchestrator.yaml` file or the id of one listed in steward.toml's
    /// `[direclaw] orchestrators`.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// List capability profiles and what they grant.
    Capabilities {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure durable step throughput and latency (B1, B2).
    Bench(crate::bench::BenchArgs),
    /// Drive an existing queued run (used by `run --detach`).
    #[command(name = "__drive", hide = true)]
    Drive {
        /// The run id.
        run: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// The orchestrator's workflow ids, one per line.
    List {
        /// An orchestrator file, or a registered orchestrator's id.
        orchestrator: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One workflow of the orchestrator, as YAML.
    Show {
        /// An orchestrator file, or a registered orchestrator's id.
        orchestrator: String,
        /// The workflow's id.
        workflow: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a run of one workflow (`workflow started`, `run_id=...`) and drive it to its end;
    /// exits 0 only if the run completes (with --detach, once it has started).
    Run {
        /// An orchestrator file, or a registered orchestrator's id.
        orchestrator: String,
        /// The workflow's id.
        workflow: String,
        /// An input value, `key=value`, stored as a string. Repeatable.
        #[arg(long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// Drive the run in the background.
        #[arg(long)]
        detach: bool,
        /// Print Steward's JSON report of the run instead.
        #[arg(long)]
        json: bool,
    },
    /// `run_id`, `state`, `summary`, `input_count` and `input_keys` of a run. Never writes.
    Status {
        /// The run id.
        run: String,
        /// Print Steward's JSON (`steward status --json`).
        #[arg(long)]
        json: bool,
    },
    /// A run's progress snapshot as DireClaw's camelCase JSON. Never writes.
    Progress {
        /// The run id.
        run: String,
        /// Print Steward's JSON (`steward progress --json`).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run that has not ended (one that has is left as it is).
    Cancel {
        /// The run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MtCommand {
    /// Generate the micro-tasks of a work packet and print them with the MT-VAL report; exits 1
    /// when the report has errors.
    Plan {
        /// The work packet (YAML or JSON).
        packet: PathBuf,
        /// An execution policy file; wins over the packet's own `execution_policy`.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The project directory the packet's paths are relative to (default: the packet's directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// The capability profile verify commands run under.
        #[arg(long, default_value = "Coder")]
        profile: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a work packet as a micro-task job (micro_task_executor_v1): generated tasks, one fresh
    /// prompt per iteration, every claim verified, escalation up the chain to a hard gate.
    Run {
        /// The work packet (YAML or JSON); its paths are relative to its directory.
        packet: PathBuf,
        /// An execution policy file; wins over the packet's own `execution_policy`.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Start it in the background and print the run id.
        #[arg(long)]
        detach: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run every work packet of a directory (each a directory with packet.yaml, and optionally
    /// bench.yaml: the expected ending and a hidden check), each on a fresh copy, and report per
    /// packet and in total: ending, iterations, escalations, false completions caught and
    /// accepted, tokens, wall time and the engine's own time. Exits 1 unless every packet ends
    /// as expected.
    Bench {
        /// The directory of packets.
        dir: PathBuf,
        /// An execution policy file for every packet (a scripted level's answers file is
        /// relative to each packet's directory).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Keep the copies (their path is printed).
        #[arg(long)]
        keep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum GateDecision {
    Continue,
    Abort,
    Skip,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolsCommand {
    /// Run the gates and terminal guards on a command: `steward tools check -- CMD...`,
    /// or on many: `steward tools check --from FILE` (one command per line, `-` for stdin).
    Check {
        /// The capability profile to check under.
        #[arg(long, default_value = "Coder")]
        profile: String,
        /// Working directory, relative to the workspace (the current directory).
        #[arg(long, default_value = ".")]
        cwd: String,
        /// Print JSON (with `--from`: one JSON object per line).
        #[arg(long)]
        json: bool,
        /// Check every command in FILE (`-`: standard input), one per line.
        #[arg(long, value_name = "FILE", conflicts_with = "command")]
        from: Option<PathBuf>,
        /// With `--from`, commands are separated by NUL bytes, so they may span lines.
        #[arg(short = '0', long = "null", requires = "from")]
        null: bool,
        /// The command and its arguments.
        #[arg(last = true, required_unless_present = "from", value_name = "CMD")]
        command: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    pub(crate) query: Option<EventsCommand>,
    /// The run; without it, events of every run (filters apply).
    pub(crate) run: Option<String>,
    /// Only this event type (e.g. `llm_inference`).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
    /// Only this actor: human, agent or system.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
    /// Only events of this job.
    #[arg(long)]
    pub(crate) job: Option<String>,
    /// Keep printing new events of RUN until it stops running.
    #[arg(long, requires = "run")]
    pub(crate) follow: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Bring the DuckDB mirror up to date and run read-only SQL over its `events` table.
    Query {
        /// The SQL, e.g. "SELECT event_type, count(*) FROM events GROUP BY 1".
        sql: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `steward worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// At most this many runs at once [default: 4 per core].
    #[arg(long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,
    /// Only runs whose workspace is this directory or beneath it. Repeatable [default: any].
    #[arg(long = "workspace", value_name = "DIR")]
    pub(crate) workspaces: Vec<PathBuf>,
    /// Leave stalled runs to a person instead of continuing them.
    #[arg(long)]
    pub(crate) no_resume_stalled: bool,
    /// Seconds steps in flight may take to finish after SIGTERM before they are stopped.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) grace: u64,
    /// Seconds between looks for work when nothing signals it [default: 1].
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub(crate) poll: f64,
    /// Stop once no run is left to claim or drive (for scripts and tests).
    #[arg(long)]
    pub(crate) exit_when_idle: bool,
}

/// `steward serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen; off loopback a token is required (`[server] token`, STEWARD_API_TOKEN)
    /// [default: `[server] listen`, else 127.0.0.1:8420].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Runs the embedded worker drives at once; 0 when separate `steward worker` processes do
    /// the work [default: 4 per core].
    #[arg(long, value_name = "N")]
    pub(crate) workers: Option<usize>,
    /// Seconds steps in flight may take to finish after SIGTERM before they are stopped.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) grace: u64,
}

/// Input values on the command line: `--input k=v` (repeatable) and `--input-file F.json`.
#[derive(Debug, clap::Args)]
pub(crate) struct InputArgs {
    /// An input value, `key=value`, read by the input's declared type. Repeatable.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub(crate) inputs: Vec<String>,
    /// A JSON object of input values (`--input` wins on conflicts).
    #[arg(long, value_name = "FILE")]
    pub(crate) input_file: Option<PathBuf>,
    /// For a DireClaw `orchestrator.yaml`: which of its workflows to run.
    #[arg(long, value_name = "ID")]
    pub(crate) workflow: Option<String>,
}

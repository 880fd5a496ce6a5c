-- Steward schema v1. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE definitions (
    hash        TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    definition_hash  TEXT NOT NULL REFERENCES definitions(hash),
    inputs           TEXT NOT NULL,
    workdir          TEXT NOT NULL,
    state            TEXT NOT NULL,
    current_step_id  TEXT,
    current_attempt  INTEGER,
    summary          TEXT NOT NULL,
    terminal_reason  TEXT,
    job_id           TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    job_kind         TEXT NOT NULL,
    profile_id       TEXT NOT NULL,
    protocol_id      TEXT NOT NULL,
    total_iterations INTEGER NOT NULL DEFAULT 0,
    owner            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    updated_at       INTEGER NOT NULL,
    heartbeat_at     INTEGER,
    last_progress_at INTEGER NOT NULL,
    finished_at      INTEGER,
    last_event_seq   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_state ON runs(state, heartbeat_at);
CREATE INDEX runs_by_created ON runs(created_at);

-- HSK-WF-001: one row per step attempt, written before it starts and after it ends.
CREATE TABLE step_attempts (
    run_id          TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    visit           INTEGER NOT NULL,
    ordinal         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    input           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    retryable       INTEGER NOT NULL DEFAULT 0,
    routes          TEXT NOT NULL DEFAULT '[]',
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    PRIMARY KEY (run_id, step_id, attempt)
) WITHOUT ROWID;

-- The Flight Recorder's source of truth. `id` orders events store-wide and is
-- never reused (AUTOINCREMENT); `seq` is gapless per run.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    event_type    TEXT NOT NULL,
    actor         TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    step_id       TEXT,
    mt_id         TEXT,
    model_id      TEXT,
    capability_id TEXT,
    payload       TEXT NOT NULL,
    UNIQUE (run_id, seq)
);

-- Events are append-only: an update is always a bug.
CREATE TRIGGER events_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

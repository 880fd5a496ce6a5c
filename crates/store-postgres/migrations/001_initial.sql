-- Steward schema v1 on PostgreSQL: the SQLite schema (v1 + v2) plus the lease columns.
-- Times are milliseconds since the Unix epoch (UTC) in BIGINT, as in SQLite, so both backends
-- hand back the same `Timestamp`s. Identifiers compare byte-wise (COLLATE "C"): every ordering
-- the store answers with then matches the reference store, whatever locale the cluster has.
-- JSON is kept as the text serde_json wrote (TEXT, not JSONB), because JSONB would normalise
-- numbers and key order and a payload would no longer round-trip unchanged.

CREATE TABLE definitions (
    hash        TEXT COLLATE "C" PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    version     BIGINT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE runs (
    run_id           TEXT COLLATE "C" PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    definition_hash  TEXT COLLATE "C" NOT NULL REFERENCES definitions(hash),
    inputs           TEXT NOT NULL,
    workdir          TEXT NOT NULL,
    state            TEXT NOT NULL,
    current_step_id  TEXT,
    current_attempt  BIGINT,
    summary          TEXT NOT NULL,
    terminal_reason  TEXT,
    job_id           TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    job_kind         TEXT NOT NULL,
    profile_id       TEXT NOT NULL,
    protocol_id      TEXT NOT NULL,
    total_iterations BIGINT NOT NULL DEFAULT 0,
    owner            TEXT,
    -- The owner's operating-system process, JSON.
    owner_process    TEXT,
    recoveries       BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    updated_at       BIGINT NOT NULL,
    heartbeat_at     BIGINT,
    last_progress_at BIGINT NOT NULL,
    finished_at      BIGINT,
    last_event_seq   BIGINT NOT NULL DEFAULT 0,
    -- The fencing token: raised by every claim.
    lease_epoch      BIGINT NOT NULL DEFAULT 0,
    -- When the current lease runs out, on the database's clock.
    lease_expires_at BIGINT,
    -- When a run waiting (say, on a retry's backoff) may be claimed again.
    ready_at         BIGINT
);
-- Listing (all, or by state) newest first, and the recovery scan.
CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_state ON runs (state, created_at, run_id);
-- What a claim looks through: the runs that may be claimable, however many have finished.
CREATE INDEX runs_claimable ON runs (created_at, run_id) WHERE state IN ('queued', 'running', 'stalled');

-- HSK-WF-001: one row per step attempt, written before it starts and after it ends.
CREATE TABLE step_attempts (
    run_id          TEXT COLLATE "C" NOT NULL,
    step_id         TEXT COLLATE "C" NOT NULL,
    attempt         BIGINT NOT NULL,
    visit           BIGINT NOT NULL,
    ordinal         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    input           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    retryable       BOOLEAN NOT NULL DEFAULT FALSE,
    routes          TEXT NOT NULL DEFAULT '[]',
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    -- The process group of the command it runs, JSON.
    process         TEXT,
    PRIMARY KEY (run_id, step_id, attempt)
);
CREATE INDEX step_attempts_in_order ON step_attempts (run_id, ordinal);

-- The Flight Recorder's source of truth. `id` orders events store-wide and is never reused;
-- `seq` is gapless per run. Ids are not a sequence's: a sequence hands numbers out when a
-- transaction asks, not when it commits, so a reader could see id 12 committed before id 11
-- and skip 11 for ever. The writer takes them from `event_ids` instead (see below).
CREATE TABLE events (
    id            BIGINT PRIMARY KEY,
    run_id        TEXT COLLATE "C" NOT NULL,
    seq           BIGINT NOT NULL,
    event_id      TEXT NOT NULL,
    ts            BIGINT NOT NULL,
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

-- The last event id handed out. Every transaction that appends events raises it by the number
-- it appends as its last statement before COMMIT; the row lock it takes is held until the
-- commit, so transactions append events one after another, ids are handed out in commit
-- order, and `list_events_since(after_id)` never passes over an event that commits later.
CREATE TABLE event_ids (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_id   BIGINT NOT NULL
);
INSERT INTO event_ids (singleton, last_id) VALUES (TRUE, 0);

-- Events are append-only: an update is always a bug.
CREATE FUNCTION steward_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION steward_events_append_only();

-- Ids of the commits each run applied: a writer that lost a reply sends the same commit again,
-- and it is not applied twice.
CREATE TABLE applied_commits (
    commit_id TEXT COLLATE "C" NOT NULL,
    run_id    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (commit_id, run_id)
);

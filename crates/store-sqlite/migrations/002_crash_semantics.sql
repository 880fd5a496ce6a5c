-- Steward schema v2: what crash recovery needs to tell a dead engine from a live one, to kill
-- what a dead engine left running, to bound recoveries, and to apply a repeated write once.

-- The owner's operating-system process (JSON ProcessRef), and how often the run was
-- recovered after its engine died.
ALTER TABLE runs ADD COLUMN owner_process TEXT;
ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;

-- The process group of the command an attempt runs (JSON ProcessRef), recorded before the
-- command may start.
ALTER TABLE step_attempts ADD COLUMN process TEXT;

-- Ids of the commits each run applied: a writer that lost a reply sends the same commit again,
-- and it is not applied twice. Commit ids are time-ordered (UUIDv7) and lead the key, so the
-- commits of one group commit land on the same page instead of one page each.
CREATE TABLE applied_commits (
    commit_id TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (commit_id, run_id)
) WITHOUT ROWID;

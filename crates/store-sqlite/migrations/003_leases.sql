-- Issue 12: workers claim runs with a lease whose epoch is the fencing token.
-- `lease_expires_at` and `ready_at` are on the database's clock (this host's, for SQLite).
ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN ready_at INTEGER;
-- A run of an older engine that still says it runs: its lease is taken as lasting until its
-- heartbeat's stall threshold would have passed (30 s), as before.
UPDATE runs SET lease_expires_at = heartbeat_at + 30000 WHERE state = 'running' AND owner IS NOT NULL;
-- What a claim looks for: runs that may be claimable, oldest first.
CREATE INDEX runs_claimable ON runs(state, created_at) WHERE state IN ('queued', 'running', 'stalled');

-- Issue 15: the same partial index, its predicate spelled without `IN`. SQLite evaluates an
-- `IN (...)` list in an index's WHERE by building a temporary b-tree, with its own page cache,
-- twice for every UPDATE of a run's state (the old row and the new): about a quarter of the
-- writer thread's time at 128 runs in flight. Equalities joined by OR are plain comparisons, and
-- a query's `state = 'queued'` still implies the predicate, so claims read the same index.
DROP INDEX runs_claimable;
CREATE INDEX runs_claimable ON runs(state, created_at)
    WHERE state = 'queued' OR state = 'running' OR state = 'stalled';

-- Issue 13: restart and fork. A run may come from another, and take some of its completed
-- attempts as its own without running them again.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE step_attempts ADD COLUMN reused_from TEXT;

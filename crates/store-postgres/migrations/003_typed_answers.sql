-- Issue 12: a person's answer and a job's "completed with issues" are typed columns of the
-- attempt, no longer read back from the event log or from the attempt's output JSON.
ALTER TABLE step_attempts ADD COLUMN with_issues BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE step_attempts ADD COLUMN answer TEXT;
UPDATE step_attempts SET with_issues = TRUE
 WHERE status = 'completed' AND (output::jsonb)->>'status' = 'completed_with_issues';
-- An answer an older engine recorded only as an event: the latest `human_decision` of the
-- step at or after the attempt stopped (only `steward gate` answers, and it answers the last
-- pause).
UPDATE step_attempts AS a SET answer = (
    SELECT (e.payload::jsonb)->>'decision' FROM events e
     WHERE e.run_id = a.run_id AND e.step_id = a.step_id
       AND e.event_type = 'human_decision' AND e.ts >= a.finished_at
       AND (e.payload::jsonb)->>'decision' IN ('continue', 'abort')
     ORDER BY e.seq DESC LIMIT 1)
 WHERE a.status = 'awaiting_user';

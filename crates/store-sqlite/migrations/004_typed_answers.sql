-- Issue 12: a person's answer and a job's "completed with issues" are typed columns of the
-- attempt, no longer read back from the event log or from the attempt's output JSON.
ALTER TABLE step_attempts ADD COLUMN with_issues INTEGER NOT NULL DEFAULT 0;
ALTER TABLE step_attempts ADD COLUMN answer TEXT;
UPDATE step_attempts SET with_issues = 1
 WHERE status = 'completed' AND json_extract(output, '$.status') = 'completed_with_issues';
-- An answer an older engine recorded only as an event: the latest `human_decision` of the
-- step at or after the attempt stopped (only `steward gate` answers, and it answers the last
-- pause).
UPDATE step_attempts SET answer = (
    SELECT json_extract(e.payload, '$.decision') FROM events e
     WHERE e.run_id = step_attempts.run_id AND e.step_id = step_attempts.step_id
       AND e.event_type = 'human_decision' AND e.ts >= step_attempts.finished_at
       AND json_extract(e.payload, '$.decision') IN ('continue', 'abort')
     ORDER BY e.seq DESC LIMIT 1)
 WHERE status = 'awaiting_user';

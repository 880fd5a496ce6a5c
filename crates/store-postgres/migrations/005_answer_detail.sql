-- Issue 13: approval steps. Who answered an attempt that waited for a person, their comment and
-- the form they filled in, kept on the attempt beside its answer.
ALTER TABLE step_attempts ADD COLUMN answer_detail TEXT;

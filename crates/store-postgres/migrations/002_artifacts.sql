-- Issue 12: what a run needs besides its records, reachable from every worker (the artifact
-- store seam, `steward_artifacts::ArtifactStore`): content-addressed blobs and the named
-- documents of a scope (a micro-task job's state).
CREATE TABLE artifacts (
    hash       TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    bytes      BYTEA NOT NULL
);

CREATE TABLE documents (
    scope      TEXT NOT NULL,
    name       TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

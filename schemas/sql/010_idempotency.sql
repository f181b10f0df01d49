-- Command side: answers to requests that carried an Idempotency-Key, so a retry gets the first
-- answer back and appends no second event. Written in the same transaction as the command's
-- other writes, which commits only after the broker acknowledged the event.
-- `scope` is "user:<id>" for authenticated requests and "anonymous" otherwise, so one user's
-- keys never collide with another's. `fingerprint` is a keyed SHA-256 of method, path and body:
-- keyed because a registration body holds a password, which a bare hash would expose to
-- offline guessing.
CREATE TABLE cmd_idempotency (
    scope       text NOT NULL,
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      smallint NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
-- Records live 24 hours; the service purges older ones in batches along this index.
CREATE INDEX cmd_idempotency_created ON cmd_idempotency (created_at);

-- Claims take turns between tenants: each (org, sandbox) holds the turn of its last claim, and
-- the next claim goes to the tenant with queued tasks whose turn is oldest (never claimed
-- first), its oldest task first. One tenant's backlog cannot hold back another's job.
CREATE TABLE tenant_turns (
    org     TEXT   NOT NULL,
    sandbox TEXT   NOT NULL,
    turn    BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox)
);

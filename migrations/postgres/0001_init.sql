-- Pipelines, schedules and runs of the PostgreSQL store: the tables of the SQLite store with
-- native types. Times are Unix milliseconds (UTC) in BIGINT columns, as in SQLite, so both
-- stores convert times the same way.

CREATE TABLE pipelines (
    uuid UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    source_yaml TEXT NOT NULL,
    -- Cron and time zone of the schedule, or NULL for a pipeline without one.
    schedule_fingerprint TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    version BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tasks (
    uuid UUID PRIMARY KEY,
    pipeline_uuid UUID NOT NULL REFERENCES pipelines (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    UNIQUE (pipeline_uuid, name)
);

CREATE TABLE task_triggers (
    uuid UUID PRIMARY KEY,
    pipeline_uuid UUID NOT NULL REFERENCES pipelines (uuid) ON DELETE CASCADE,
    trigger_task_uuid UUID NOT NULL,
    triggered_task_uuid UUID NOT NULL,
    trigger_type TEXT NOT NULL
);
CREATE INDEX task_triggers_pipeline ON task_triggers (pipeline_uuid);

CREATE TABLE scheduled_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_uuid UUID NOT NULL,
    pipeline_run_uuid UUID NOT NULL UNIQUE,
    -- schedule, manual or api
    kind TEXT NOT NULL,
    schedule_fingerprint TEXT,
    execute_at BIGINT NOT NULL,
    input BYTEA,
    -- PipelineRunConfig as JSON text, kept byte for byte as the caller sent it.
    run_config TEXT,
    claimed_by TEXT,
    claimed_until BIGINT,
    -- Set once the broker acknowledged every initial task. Published rows are kept for a
    -- while so that the unique fire-time index keeps rejecting a fire time already run.
    published_at BIGINT,
    created_at BIGINT NOT NULL
);

-- At most one scheduled run per pipeline and fire time, whatever number of generators run.
CREATE UNIQUE INDEX scheduled_runs_fire_time ON scheduled_runs (pipeline_uuid, execute_at)
    WHERE kind = 'schedule';
-- The publishers' claim query scans unpublished rows in fire-time order.
CREATE INDEX scheduled_runs_due ON scheduled_runs (execute_at, id) WHERE published_at IS NULL;
CREATE INDEX scheduled_runs_published ON scheduled_runs (execute_at)
    WHERE published_at IS NOT NULL;

CREATE TABLE pipeline_runs (
    run_uuid UUID PRIMARY KEY,
    -- Insertion order, which breaks ties between runs started in the same millisecond.
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    pipeline_uuid UUID NOT NULL,
    pipeline_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- running, succeeded or failed
    status TEXT NOT NULL,
    -- Task executions published or expected and not yet reported; the run ends at zero.
    outstanding BIGINT NOT NULL,
    task_results BIGINT NOT NULL DEFAULT 0,
    failed_tasks BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    scheduled_for BIGINT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX pipeline_runs_pipeline ON pipeline_runs (pipeline_uuid, started_at);
CREATE INDEX pipeline_runs_name ON pipeline_runs (pipeline_name, started_at);
CREATE INDEX pipeline_runs_started ON pipeline_runs (started_at);

CREATE TABLE task_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- task_run_uuid and batch index, or the result uuid for messages without a task run id;
    -- a redelivered result has the same key and is counted once.
    dedupe_key TEXT NOT NULL UNIQUE,
    result_uuid UUID NOT NULL,
    run_uuid UUID NOT NULL,
    task_run_uuid UUID NOT NULL,
    task_uuid UUID NOT NULL,
    task_name TEXT NOT NULL,
    task_type TEXT NOT NULL,
    is_successful BOOLEAN NOT NULL,
    duration_ms BIGINT NOT NULL,
    output_bytes BIGINT NOT NULL,
    -- JSON array of error strings.
    errors JSONB NOT NULL,
    batch_index INTEGER,
    attempt INTEGER,
    executed_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX task_runs_run ON task_runs (run_uuid, id);

-- Every result as the statistics listener received it, once per result uuid.
CREATE TABLE task_run_statistics (
    result_uuid UUID PRIMARY KEY,
    organization_uuid UUID NOT NULL,
    pipeline_uuid UUID NOT NULL,
    pipeline_run_uuid UUID NOT NULL,
    task_uuid UUID NOT NULL,
    task_type TEXT NOT NULL,
    pipeline_type TEXT NOT NULL,
    is_initial_task BOOLEAN NOT NULL,
    is_final_task BOOLEAN NOT NULL,
    is_successful BOOLEAN NOT NULL,
    duration_ms BIGINT NOT NULL,
    output_bytes BIGINT NOT NULL,
    -- JSON array of error strings.
    errors JSONB NOT NULL,
    executed_at BIGINT NOT NULL
);
CREATE INDEX task_run_statistics_pipeline ON task_run_statistics (pipeline_uuid, executed_at);
CREATE INDEX task_run_statistics_run ON task_run_statistics (pipeline_run_uuid);

-- Pipelines, schedules and runs of the embedded store. Times are Unix milliseconds (UTC).

CREATE TABLE pipelines (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    source_yaml TEXT NOT NULL,
    -- Cron and time zone of the schedule, or NULL for a pipeline without one.
    schedule_fingerprint TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE tasks (
    uuid TEXT PRIMARY KEY,
    pipeline_uuid TEXT NOT NULL REFERENCES pipelines (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    UNIQUE (pipeline_uuid, name)
);

CREATE TABLE task_triggers (
    uuid TEXT PRIMARY KEY,
    pipeline_uuid TEXT NOT NULL REFERENCES pipelines (uuid) ON DELETE CASCADE,
    trigger_task_uuid TEXT NOT NULL,
    triggered_task_uuid TEXT NOT NULL,
    trigger_type TEXT NOT NULL
);

CREATE TABLE scheduled_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_uuid TEXT NOT NULL,
    pipeline_run_uuid TEXT NOT NULL UNIQUE,
    -- schedule, manual or api
    kind TEXT NOT NULL,
    schedule_fingerprint TEXT,
    execute_at INTEGER NOT NULL,
    input BLOB,
    run_config TEXT,
    claimed_by TEXT,
    claimed_until INTEGER,
    -- Set once the broker acknowledged every initial task. Published rows are kept for a
    -- while so that the unique fire-time index keeps rejecting a fire time already run.
    published_at INTEGER,
    created_at INTEGER NOT NULL
);

-- At most one scheduled run per pipeline and fire time, whatever number of generators run.
CREATE UNIQUE INDEX scheduled_runs_fire_time ON scheduled_runs (pipeline_uuid, execute_at)
    WHERE kind = 'schedule';
CREATE INDEX scheduled_runs_due ON scheduled_runs (execute_at);

CREATE TABLE pipeline_runs (
    run_uuid TEXT PRIMARY KEY,
    pipeline_uuid TEXT NOT NULL,
    pipeline_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- running, succeeded or failed
    status TEXT NOT NULL,
    -- Task executions published or expected and not yet reported; the run ends at zero.
    outstanding INTEGER NOT NULL,
    task_results INTEGER NOT NULL DEFAULT 0,
    failed_tasks INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    scheduled_for INTEGER,
    started_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX pipeline_runs_pipeline ON pipeline_runs (pipeline_uuid, started_at);
CREATE INDEX pipeline_runs_started ON pipeline_runs (started_at);

CREATE TABLE task_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- task_run_uuid and batch index, or the result uuid for messages without a task run id;
    -- a redelivered result has the same key and is counted once.
    dedupe_key TEXT NOT NULL UNIQUE,
    result_uuid TEXT NOT NULL,
    run_uuid TEXT NOT NULL,
    task_run_uuid TEXT NOT NULL,
    task_uuid TEXT NOT NULL,
    task_name TEXT NOT NULL,
    task_type TEXT NOT NULL,
    is_successful INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,
    errors TEXT NOT NULL,
    batch_index INTEGER,
    attempt INTEGER,
    executed_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX task_runs_run ON task_runs (run_uuid, id);

-- Every result as the statistics listener received it, once per result uuid.
CREATE TABLE task_run_statistics (
    result_uuid TEXT PRIMARY KEY,
    organization_uuid TEXT NOT NULL,
    pipeline_uuid TEXT NOT NULL,
    pipeline_run_uuid TEXT NOT NULL,
    task_uuid TEXT NOT NULL,
    task_type TEXT NOT NULL,
    pipeline_type TEXT NOT NULL,
    is_initial_task INTEGER NOT NULL,
    is_final_task INTEGER NOT NULL,
    is_successful INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,
    errors TEXT NOT NULL,
    executed_at INTEGER NOT NULL
);
CREATE INDEX task_run_statistics_pipeline ON task_run_statistics (pipeline_uuid, executed_at);
CREATE INDEX task_run_statistics_run ON task_run_statistics (pipeline_run_uuid);

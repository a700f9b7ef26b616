//! Parsing of one pipeline file into a [`Pipeline`].

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::errors::{PipelineErrors, ProblemList};
use super::strict::{decode_mapping, describe_value, join_path};
use super::task_spec::{build_task_kind, CommonTaskFields, COMMON_TASK_KEYS, TASK_TYPES};
use super::validate::{check_graph, DraftTask, DraftTrigger};
use super::{
    pipeline_uuid, task_uuid, trigger_uuid, Pipeline, TaskDefinition, Trigger, TriggerType,
};
use crate::schedule::{Schedule, ScheduleError, ScheduleSpec};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PipelineFile {
    name: String,
    description: String,
    schedule: Option<Mapping>,
    tasks: Option<Vec<Value>>,
    triggers: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TriggerFile {
    from: String,
    to: String,
    #[serde(rename = "type")]
    trigger_type: String,
}

/// Parses and validates one pipeline file. `file_label` names the file in problems.
pub(crate) fn parse_file(file_label: &str, yaml: &str) -> Result<Pipeline, PipelineErrors> {
    let mut problems = ProblemList::new(file_label);

    let root = match serde_yaml_ng::from_str::<Value>(yaml) {
        Ok(root) => root,
        Err(error) => {
            let field = match error.location() {
                Some(location) => format!("line {} column {}", location.line(), location.column()),
                None => String::new(),
            };
            problems.push(field, format!("invalid YAML: {error}"));
            return Err(PipelineErrors::new(problems.into_problems()));
        }
    };
    let Value::Mapping(root) = root else {
        let found = describe_value(&root);
        problems.push(
            "",
            format!("expected a mapping with name, tasks and triggers, found {found}"),
        );
        return Err(PipelineErrors::new(problems.into_problems()));
    };
    let decoded = decode_mapping::<PipelineFile>(&root, "", &[], "a pipeline", &mut problems);
    if !decoded.is_rejected("name") {
        check_pipeline_name(&decoded.value.name, &mut problems);
    }
    let file = decoded.value;

    let schedule = file
        .schedule
        .as_ref()
        .and_then(|mapping| parse_schedule(mapping, &mut problems));

    let uuid = pipeline_uuid(&file.name);
    let tasks = parse_tasks(file.tasks.as_deref(), &mut problems);
    let triggers = parse_triggers(&file.triggers, &mut problems);
    check_graph(&tasks, &triggers, &mut problems);

    if !problems.is_empty() {
        return Err(PipelineErrors::new(problems.into_problems()));
    }
    Ok(assemble(file, uuid, schedule, tasks, triggers, yaml))
}

/// Builds the pipeline once every check has passed, so each draft is complete.
fn assemble(
    file: PipelineFile,
    uuid: uuid::Uuid,
    schedule: Option<ScheduleSpec>,
    tasks: Vec<DraftTask>,
    triggers: Vec<DraftTrigger>,
    yaml: &str,
) -> Pipeline {
    let tasks = tasks
        .into_iter()
        .map(|task| TaskDefinition {
            uuid: task_uuid(uuid, &task.name),
            name: task.name,
            task_type: task.task_type.expect("a valid task has a type"),
            kind: task.kind.expect("a valid task has its fields"),
            timeout_ms: task.timeout_ms,
            max_attempts: task.max_attempts,
        })
        .collect();
    let triggers = triggers
        .into_iter()
        .map(|trigger| {
            let trigger_type = trigger.trigger_type.expect("a valid trigger has a type");
            let from = task_uuid(uuid, &trigger.from);
            let to = task_uuid(uuid, &trigger.to);
            Trigger {
                uuid: trigger_uuid(uuid, &trigger.from, &trigger.to, trigger_type),
                from,
                to,
                trigger_type,
            }
        })
        .collect();

    Pipeline {
        uuid,
        name: file.name,
        description: file.description,
        schedule,
        tasks,
        triggers,
        source_yaml: yaml.to_owned(),
    }
}

fn check_pipeline_name(name: &str, problems: &mut ProblemList) {
    let is_valid_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if name.is_empty() {
        problems.push(
            "name",
            "missing field; set it to a unique pipeline name such as daily-report",
        );
    } else if !name.chars().all(is_valid_char) {
        problems.push(
            "name",
            format!(
                "invalid pipeline name {name:?}; use only lowercase letters, digits, '_' and '-'"
            ),
        );
    }
}

fn parse_schedule(mapping: &Mapping, problems: &mut ProblemList) -> Option<ScheduleSpec> {
    let decoded = decode_mapping::<ScheduleSpec>(mapping, "schedule", &[], "a schedule", problems);
    if decoded.is_rejected("cron") || decoded.is_rejected("timezone") {
        return None;
    }
    let spec = decoded.value;
    if spec.cron.trim().is_empty() {
        problems.push(
            "schedule.cron",
            "missing field; set it to a cron pattern such as \"*/5 * * * *\"",
        );
        return None;
    }
    match Schedule::parse(&spec) {
        Ok(_) => decoded.complete.then_some(spec),
        Err(error @ ScheduleError::InvalidCron { .. }) => {
            problems.push("schedule.cron", error.to_string());
            None
        }
        Err(error @ ScheduleError::UnknownTimezone(_)) => {
            problems.push("schedule.timezone", error.to_string());
            None
        }
    }
}

fn parse_tasks(entries: Option<&[Value]>, problems: &mut ProblemList) -> Vec<DraftTask> {
    let entries = entries.unwrap_or_default();
    if entries.is_empty() {
        problems.push(
            "tasks",
            "missing or empty; a pipeline needs at least one task",
        );
    }

    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| parse_task(index, entry, problems))
        .collect()
}

fn parse_task(index: usize, entry: &Value, problems: &mut ProblemList) -> DraftTask {
    let path = format!("tasks[{index}]");
    let mut draft = DraftTask {
        path: path.clone(),
        ..DraftTask::default()
    };
    let Value::Mapping(mapping) = entry else {
        problems.push(
            &path,
            format!(
                "expected a mapping with name and type, found {}",
                describe_value(entry)
            ),
        );
        return draft;
    };

    let (common, specific) = split_keys(mapping, COMMON_TASK_KEYS);
    let decoded = decode_mapping::<CommonTaskFields>(&common, &path, &[], "a task", problems);
    let header = &decoded.value;
    let name = header.name.trim();
    if decoded.is_rejected("name") {
        // Already reported as a value of the wrong type.
    } else if name.is_empty() {
        problems.push(
            join_path(&path, "name"),
            "missing field; set it to a name unique in this pipeline",
        );
    } else {
        draft.name = name.to_owned();
    }
    if header.timeout_ms == Some(0) {
        problems.push(
            join_path(&path, "timeout_ms"),
            "invalid value 0; set a positive number of milliseconds or remove it",
        );
    }
    draft.timeout_ms = header.timeout_ms;
    if header.max_attempts == Some(0) {
        problems.push(
            join_path(&path, "max_attempts"),
            "invalid value 0; set at least 1 (1 means no retry) or remove it",
        );
    }
    draft.max_attempts = header.max_attempts;

    if decoded.is_rejected("type") {
        return draft;
    }
    let type_field = join_path(&path, "type");
    let Some(task_type) = TASK_TYPES
        .iter()
        .copied()
        .find(|known| *known == header.task_type)
    else {
        let valid_types = TASK_TYPES.join(", ");
        if header.task_type.is_empty() {
            problems.push(
                type_field,
                format!("missing field; set it to one of: {valid_types}"),
            );
        } else {
            problems.push(
                type_field,
                format!(
                    "unknown task type {:?}; use one of: {valid_types}",
                    header.task_type
                ),
            );
        }
        return draft;
    };
    draft.task_type = Some(task_type);
    draft.kind = build_task_kind(task_type, &specific, &path, problems);
    draft
}

/// Splits `mapping` into the entries whose key is in `keys` and the rest.
fn split_keys(mapping: &Mapping, keys: &[&str]) -> (Mapping, Mapping) {
    let mut chosen = Mapping::new();
    let mut rest = Mapping::new();
    for (key, value) in mapping {
        let is_chosen = key.as_str().is_some_and(|text| keys.contains(&text));
        let target = if is_chosen { &mut chosen } else { &mut rest };
        target.insert(key.clone(), value.clone());
    }
    (chosen, rest)
}

fn parse_triggers(entries: &[Value], problems: &mut ProblemList) -> Vec<DraftTrigger> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| parse_trigger(index, entry, problems))
        .collect()
}

fn parse_trigger(index: usize, entry: &Value, problems: &mut ProblemList) -> DraftTrigger {
    let path = format!("triggers[{index}]");
    let mut draft = DraftTrigger {
        path: path.clone(),
        ..DraftTrigger::default()
    };
    let Value::Mapping(mapping) = entry else {
        problems.push(
            &path,
            format!(
                "expected a mapping with from and to, found {}",
                describe_value(entry)
            ),
        );
        return draft;
    };
    let decoded = decode_mapping::<TriggerFile>(mapping, &path, &[], "a trigger", problems);
    let trigger = &decoded.value;

    for (key, value) in [("from", &trigger.from), ("to", &trigger.to)] {
        if value.trim().is_empty() && !decoded.is_rejected(key) {
            problems.push(
                join_path(&path, key),
                "missing field; set it to a task name",
            );
        }
    }
    draft.from = trigger.from.trim().to_owned();
    draft.to = trigger.to.trim().to_owned();

    if decoded.is_rejected("type") {
        return draft;
    }
    draft.trigger_type = match trigger.trigger_type.as_str() {
        "" => Some(TriggerType::Output),
        text => TriggerType::parse(text),
    };
    if draft.trigger_type.is_none() {
        let valid_types = TriggerType::ALL.map(TriggerType::as_str).join(", ");
        problems.push(
            join_path(&path, "type"),
            format!(
                "unknown trigger type {:?}; use one of: {valid_types}",
                trigger.trigger_type
            ),
        );
    }
    draft
}

//! Checks of the trigger graph: names, trigger types, cycles and initial tasks.

use std::collections::{BTreeMap, BTreeSet};

use super::errors::ProblemList;
use super::strict::join_path;
use super::TriggerType;
use crate::messages::TaskKind;

/// A task as parsed, before its uuid is known. Fields that failed to parse stay empty.
#[derive(Debug, Default)]
pub(crate) struct DraftTask {
    pub path: String,
    pub name: String,
    pub task_type: Option<&'static str>,
    pub kind: Option<TaskKind>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

/// A trigger as parsed, naming its tasks. Fields that failed to parse stay empty.
#[derive(Debug, Default)]
pub(crate) struct DraftTrigger {
    pub path: String,
    pub from: String,
    pub to: String,
    pub trigger_type: Option<TriggerType>,
}

/// Pushes a problem for each duplicate task name, trigger to an unknown task, self-trigger,
/// trigger type the source task never fires, duplicate trigger and cycle, and for a
/// pipeline where every task has an incoming trigger.
pub(crate) fn check_graph(
    tasks: &[DraftTask],
    triggers: &[DraftTrigger],
    problems: &mut ProblemList,
) {
    let task_types = check_task_names(tasks, problems);
    let mut task_names: Vec<&str> = Vec::new();
    for task in tasks {
        if !task.name.is_empty() && !task_names.contains(&task.name.as_str()) {
            task_names.push(&task.name);
        }
    }
    let task_list = task_names.join(", ");

    // Edges whose both ends name a known task. The cycle and initial-task checks use
    // only these, so a misspelt name is reported once.
    let mut edges: Vec<(&str, &str, &str)> = Vec::new();
    let mut seen_triggers: BTreeMap<(&str, &str, TriggerType), &str> = BTreeMap::new();

    for trigger in triggers {
        let mut ends_known = true;
        for (key, name) in [("from", &trigger.from), ("to", &trigger.to)] {
            if !name.is_empty() && !task_types.contains_key(name.as_str()) {
                problems.push(
                    join_path(&trigger.path, key),
                    format!("unknown task {name:?}; the tasks are: {task_list}"),
                );
            }
            ends_known &= task_types.contains_key(name.as_str());
        }
        if !ends_known {
            continue;
        }

        if trigger.from == trigger.to {
            problems.push(
                &trigger.path,
                format!(
                    "task {:?} triggers itself; a task cannot run after its own result",
                    trigger.from
                ),
            );
            continue;
        }

        if let Some(trigger_type) = trigger.trigger_type {
            let source_type = task_types[trigger.from.as_str()];
            check_trigger_type(trigger, trigger_type, source_type, problems);

            let key = (trigger.from.as_str(), trigger.to.as_str(), trigger_type);
            if let Some(first_path) = seen_triggers.insert(key, &trigger.path) {
                problems.push(
                    &trigger.path,
                    format!(
                        "duplicate of {first_path}, with the same from, to and type; remove one"
                    ),
                );
            }
        }
        edges.push((&trigger.from, &trigger.to, &trigger.path));
    }

    check_cycles(&task_types, &edges, problems);
    check_initial_task(&task_types, &edges, problems);
}

/// Pushes a problem for each repeated task name. Returns each named task's type, or
/// `None` for a task whose type is invalid.
fn check_task_names<'a>(
    tasks: &'a [DraftTask],
    problems: &mut ProblemList,
) -> BTreeMap<&'a str, Option<&'static str>> {
    let mut first_paths: BTreeMap<&str, &str> = BTreeMap::new();
    let mut task_types = BTreeMap::new();

    for task in tasks.iter().filter(|task| !task.name.is_empty()) {
        if let Some(first_path) = first_paths.get(task.name.as_str()) {
            problems.push(
                join_path(&task.path, "name"),
                format!(
                    "duplicate task name {:?}, already used by {first_path}; rename one of them",
                    task.name
                ),
            );
            continue;
        }
        first_paths.insert(&task.name, &task.path);
        task_types.insert(task.name.as_str(), task.task_type);
    }
    task_types
}

fn check_trigger_type(
    trigger: &DraftTrigger,
    trigger_type: TriggerType,
    source_type: Option<&'static str>,
    problems: &mut ProblemList,
) {
    // A task whose type is invalid is already reported.
    let Some(source_type) = source_type else {
        return;
    };
    let field = join_path(&trigger.path, "type");
    let from_condition = source_type == "condition";

    match trigger_type {
        TriggerType::Output if from_condition => problems.push(
            field,
            format!(
                "output trigger from condition task {:?} never fires, because a condition sends condition_true or condition_false; use one of those",
                trigger.from
            ),
        ),
        TriggerType::ConditionTrue | TriggerType::ConditionFalse if !from_condition => problems.push(
            field,
            format!(
                "{} fires only from a condition task, but {:?} is a {source_type} task; use type output",
                trigger_type.as_str(),
                trigger.from
            ),
        ),
        _ => {}
    }
}

/// Pushes one problem per cycle that a depth-first search meets, naming its tasks.
fn check_cycles(
    task_types: &BTreeMap<&str, Option<&'static str>>,
    edges: &[(&str, &str, &str)],
    problems: &mut ProblemList,
) {
    let mut successors: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (from, to, path) in edges {
        successors.entry(*from).or_default().push((*to, *path));
    }

    let mut search = CycleSearch {
        successors: &successors,
        finished: BTreeSet::new(),
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for task in task_types.keys() {
        search.visit(task);
    }

    for (path, cycle) in search.cycles {
        problems.push(
            path,
            format!(
                "closes a cycle {}; remove one of these triggers so every run ends",
                cycle.join(" -> ")
            ),
        );
    }
}

struct CycleSearch<'a> {
    successors: &'a BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    finished: BTreeSet<&'a str>,
    /// Tasks on the current search path, in order.
    stack: Vec<&'a str>,
    /// The trigger path that closes each cycle, and the cycle's tasks from start to start.
    cycles: Vec<(&'a str, Vec<&'a str>)>,
}

impl<'a> CycleSearch<'a> {
    fn visit(&mut self, task: &'a str) {
        if self.finished.contains(task) {
            return;
        }
        self.stack.push(task);
        for &(next, trigger_path) in self.successors.get(task).into_iter().flatten() {
            if let Some(start) = self.stack.iter().position(|on_path| *on_path == next) {
                let mut cycle = self.stack[start..].to_vec();
                cycle.push(next);
                self.cycles.push((trigger_path, cycle));
            } else {
                self.visit(next);
            }
        }
        self.stack.pop();
        self.finished.insert(task);
    }
}

fn check_initial_task(
    task_types: &BTreeMap<&str, Option<&'static str>>,
    edges: &[(&str, &str, &str)],
    problems: &mut ProblemList,
) {
    if task_types.is_empty() {
        return;
    }
    let triggered = edges.iter().map(|(_, to, _)| *to).collect::<BTreeSet<_>>();
    if task_types.keys().all(|task| triggered.contains(task)) {
        problems.push(
            "triggers",
            "every task has an incoming trigger, so a run has no task to start with; remove the triggers into the task that should run first",
        );
    }
}

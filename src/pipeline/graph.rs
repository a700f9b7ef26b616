//! Graph queries of a run, restricted by its [`PipelineRunConfig`].
//!
//! A run config lists task uuids and trigger uuids (as strings) to keep or to drop. A task
//! is active when the task filter allows it. A trigger is active when the trigger filter
//! allows it and both of its tasks are active, because a trigger from a task that does
//! not run never fires and a trigger into one that does not run starts nothing.

use uuid::Uuid;

use super::{Pipeline, TaskDefinition, Trigger, TriggerType};
use crate::messages::PipelineRunConfig;

impl Pipeline {
    /// Returns the task with this uuid.
    pub fn task(&self, uuid: Uuid) -> Option<&TaskDefinition> {
        self.tasks.iter().find(|task| task.uuid == uuid)
    }

    /// Returns the task with this name.
    pub fn task_by_name(&self, name: &str) -> Option<&TaskDefinition> {
        self.tasks.iter().find(|task| task.name == name)
    }

    /// Returns the tasks a run starts with: active tasks without an active incoming
    /// trigger, in file order.
    pub fn initial_tasks(&self, config: &PipelineRunConfig) -> Vec<&TaskDefinition> {
        self.tasks
            .iter()
            .filter(|task| is_task_active(task.uuid, config))
            .filter(|task| {
                !self
                    .active_triggers(config)
                    .any(|trigger| trigger.to == task.uuid)
            })
            .collect()
    }

    /// Returns the active tasks that a result of `trigger_type` from task `from_task`
    /// starts, in trigger order.
    pub fn next_tasks(
        &self,
        from_task: Uuid,
        trigger_type: TriggerType,
        config: &PipelineRunConfig,
    ) -> Vec<&TaskDefinition> {
        self.active_triggers(config)
            .filter(|trigger| trigger.from == from_task && trigger.trigger_type == trigger_type)
            .filter_map(|trigger| self.task(trigger.to))
            .collect()
    }

    /// Returns whether no active trigger leaves `task`, so its result ends its branch of
    /// the run.
    pub fn is_final(&self, task: Uuid, config: &PipelineRunConfig) -> bool {
        !self
            .active_triggers(config)
            .any(|trigger| trigger.from == task)
    }

    /// Returns the triggers that can fire in a run with this config.
    pub fn active_triggers<'a>(
        &'a self,
        config: &'a PipelineRunConfig,
    ) -> impl Iterator<Item = &'a Trigger> + 'a {
        self.triggers.iter().filter(move |trigger| {
            config.task_trigger_ids.allows(&trigger.uuid.to_string())
                && is_task_active(trigger.from, config)
                && is_task_active(trigger.to, config)
        })
    }
}

fn is_task_active(task: Uuid, config: &PipelineRunConfig) -> bool {
    config.task_ids.allows(&task.to_string())
}

//! Restart machinery shared by every supervisor in the runtime.
//!
//! [`policy`] makes the one restart decision (restart after a backoff, or give up); the
//! [`stage`] supervisor and the consumer actors both ask it, so a policy change applies to the
//! whole tree. [`registry`] records what each supervised actor is doing for the HTTP endpoint.

pub mod policy;
pub mod registry;
pub mod shutdown;
pub mod stage;

pub use policy::{RestartDecision, RestartPolicy, RestartTracker};
pub use registry::{ActorRegistry, ActorState, ActorStatus};
pub use shutdown::ShutdownSignal;
pub use stage::{ChildSpec, StageMsg, StageSupervisor, StageSupervisorArgs};

/// Exit code of the process when a stage gave up restarting its children.
pub const EXIT_STAGE_GAVE_UP: i32 = 3;

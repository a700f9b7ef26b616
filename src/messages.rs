//! Wire types of the Ylem task-processing topics.
//!
//! Every record value is a JSON envelope `{"headers":{"X-Message-Name":…},"message":{…}}`.
//! Field names, base64 byte fields, millisecond durations and error codes match the
//! original Ylem services, so records flow both ways between them and this runtime.

mod base64_bytes;
mod codes;
mod envelope;
mod result;
mod task;

pub use codes::ErrorCode;
pub use envelope::{DecodeError, Message, HEADER_MESSAGE_NAME};
pub use result::{ErrorSeverity, TaskRunError, TaskRunResult, RESULT_MESSAGE_NAME};
pub use task::{
    ApiIntegration, CallApi, CheckCondition, IdFilter, Meta, PipelineRunConfig, ProcessData,
    RunQuery, SendNotification, Source, TaskCommon, TaskKind, TaskMessage, TransformData,
};

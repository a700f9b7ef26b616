//! Error codes carried in `result.task_run` errors; the numbers are fixed by the Ylem services.

/// A numeric error code of a failed task result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The task message could not be decoded.
    Decode = 100,
    /// The runtime itself failed (a panic, an output over the size limit).
    Internal = 101,
    /// The task message or its input is not what the task type needs.
    BadRequest = 200,
    /// A query failed to run.
    QueryFailed = 10000,
    /// A query could not open its connection.
    QueryConnection = 10001,
    /// A notification could not be sent.
    NotificationFailed = 10100,
    /// An HTTP call failed.
    ApiCallFailed = 10200,
    /// An HTTP call got a response with a non-success status.
    ApiCallStatus = 10201,
    /// A transformer failed.
    TransformerFailed = 10300,
    /// A condition could not be evaluated to a boolean.
    ConditionFailed = 10400,
    /// A for_each input is not a JSON array.
    ForEachFailed = 10600,
    /// A jq processor failed.
    ProcessorFailed = 11200,
    /// The message names a task type this runtime does not execute.
    UnknownTaskType = 9999,
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

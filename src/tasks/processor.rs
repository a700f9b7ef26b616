//! `processor` tasks: a jq program applied to the input, run by jaq.
//!
//! The output is the last value the program emits, as JSON, or `{}` when it emits none. The
//! `strategy` field is ignored, as in Ylem. Compiled programs are cached by their text.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Native, Vars};
use jaq_json::Val;

use super::{TaskFailure, TaskOutput};
use crate::messages::{ErrorCode, ProcessData};

type Program = jaq_core::compile::Filter<Native<data::JustLut<Val>>>;

/// Compiled programs kept by [`ProgramCache`].
const CACHED_PROGRAMS: usize = 256;

/// Compiled jq programs by expression text, least recently used first out.
pub struct ProgramCache {
    programs: Mutex<lru::LruCache<String, Arc<Program>>>,
}

impl Default for ProgramCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CACHED_PROGRAMS).expect("the cache capacity is not zero");
        ProgramCache {
            programs: Mutex::new(lru::LruCache::new(capacity)),
        }
    }
}

impl ProgramCache {
    fn get_or_compile(&self, expression: &str) -> Result<Arc<Program>, TaskFailure> {
        if let Some(program) = self.lock().get(expression) {
            return Ok(Arc::clone(program));
        }
        let program = Arc::new(compile(expression)?);
        self.lock().put(expression.to_owned(), Arc::clone(&program));
        Ok(program)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<Program>>> {
        // A panic while holding the lock cannot leave the cache inconsistent, so a poisoned
        // lock is used as it is.
        self.programs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn processor_failure(message: impl Into<String>) -> TaskFailure {
    TaskFailure::new(ErrorCode::ProcessorFailed, message)
}

/// Runs the jq program on a blocking thread, so the caller's time limit can expire while a
/// long program runs.
///
/// NOTE: a program that never ends keeps its blocking thread busy after the time limit
/// expires, because jaq has no cancellation.
pub async fn run(
    process: &ProcessData,
    input: &[u8],
    cache: &ProgramCache,
) -> Result<TaskOutput, TaskFailure> {
    let program = cache.get_or_compile(&process.expression)?;
    let input = input.to_vec();
    let expression = process.expression.clone();
    let output = tokio::task::spawn_blocking(move || run_program(&program, &expression, &input))
        .await
        .map_err(|error| {
            TaskFailure::new(
                ErrorCode::Internal,
                format!("the jq program's thread failed: {error}"),
            )
        })??;
    Ok(TaskOutput::single(output))
}

fn compile(expression: &str) -> Result<Program, TaskFailure> {
    let program = File {
        code: expression,
        path: (),
    };
    let definitions = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let functions = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let arena = Arena::default();

    let modules = Loader::new(definitions)
        .load(&arena, program)
        .map_err(|errors| {
            processor_failure(format!(
                "jq program `{expression}` is invalid: {}",
                describe_load_errors(&errors)
            ))
        })?;
    Compiler::default()
        .with_funs(functions)
        .compile(modules)
        .map_err(|errors| {
            let problems: Vec<String> = errors
                .iter()
                .flat_map(|(_, undefined)| undefined.iter())
                .map(|(name, kind)| format!("undefined {} {name}", kind.as_str()))
                .collect();
            processor_failure(format!(
                "jq program `{expression}` is invalid: {}",
                problems.join("; ")
            ))
        })
}

fn describe_load_errors(errors: &jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;

    let mut problems = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(failures) => problems.extend(
                failures
                    .iter()
                    .map(|(path, message)| format!("{path}: {message}")),
            ),
            Error::Lex(failures) => problems.extend(failures.iter().map(|(expected, rest)| {
                format!("expected {} at {:?}", expected.as_str(), excerpt(rest))
            })),
            Error::Parse(failures) => problems.extend(failures.iter().map(|(expected, rest)| {
                format!("expected {} at {:?}", expected.as_str(), excerpt(rest))
            })),
        }
    }
    problems.join("; ")
}

/// Cuts the unparsed rest of a program to its first 20 characters, for error messages.
fn excerpt(rest: &str) -> &str {
    match rest.char_indices().nth(20) {
        Some((end, _)) => &rest[..end],
        None => rest,
    }
}

fn run_program(program: &Program, expression: &str, input: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    let input = jaq_json::read::parse_single(input).map_err(|error| {
        processor_failure(format!(
            "jq program `{expression}` needs a JSON input: {error}"
        ))
    })?;

    let context = Ctx::<data::JustLut<Val>>::new(&program.lut, Vars::new([]));
    let mut last: Option<Val> = None;
    for result in program.id.run((context, input)) {
        match result {
            Ok(value) => last = Some(value),
            Err(exception) => {
                let message = match exception.get_err() {
                    Ok(error) => format!("jq program `{expression}` failed: {error}"),
                    Err(_) => format!("jq program `{expression}` stopped with halt"),
                };
                return Err(processor_failure(message));
            }
        }
    }

    let Some(last) = last else {
        return Ok(b"{}".to_vec());
    };
    // jaq prints its values as JSON text. Parsing that text rejects the few values that are not
    // JSON (NaN, byte strings) instead of passing them on.
    let text = last.to_string();
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
        processor_failure(format!(
            "jq program `{expression}` emitted a value that is not JSON ({error}): {}",
            excerpt(&text)
        ))
    })?;
    Ok(json.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn process(expression: &str, input: &str) -> Result<String, TaskFailure> {
        let cache = ProgramCache::default();
        let process = ProcessData {
            expression: expression.to_owned(),
            strategy: String::new(),
        };
        let output = run(&process, input.as_bytes(), &cache).await?;
        Ok(String::from_utf8(output.outputs[0].clone()).unwrap())
    }

    #[tokio::test]
    async fn outputs_last_value() {
        assert_eq!(process(".[]", "[1, 2, 3]").await.unwrap(), "3");
    }

    #[tokio::test]
    async fn no_value_outputs_empty_object() {
        assert_eq!(process("empty", "[1]").await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn std_filters_work() {
        let output = process(
            "map(select(.a > 1)) | length",
            r#"[{"a":1},{"a":2},{"a":3}]"#,
        )
        .await
        .unwrap();
        assert_eq!(output, "2");
        assert_eq!(
            process("{b: .a}", r#"{"a":"x"}"#).await.unwrap(),
            r#"{"b":"x"}"#
        );
    }

    #[tokio::test]
    async fn syntax_error_is_processor_failure() {
        let failure = process(".a |", "{}").await.unwrap_err();
        assert_eq!(failure.code, ErrorCode::ProcessorFailed);
        assert!(failure.message.contains("`.a |`"), "{}", failure.message);
    }

    #[tokio::test]
    async fn undefined_filter_is_named() {
        let failure = process("nosuchfilter", "{}").await.unwrap_err();
        assert_eq!(failure.code, ErrorCode::ProcessorFailed);
        assert!(
            failure.message.contains("nosuchfilter"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn runtime_error_is_processor_failure() {
        let failure = process(r#"error("boom")"#, "{}").await.unwrap_err();
        assert_eq!(failure.code, ErrorCode::ProcessorFailed);
        assert!(failure.message.contains("boom"), "{}", failure.message);
    }

    #[tokio::test]
    async fn halt_does_not_exit() {
        let failure = process("halt", "{}").await.unwrap_err();
        assert_eq!(failure.code, ErrorCode::ProcessorFailed);
    }

    #[tokio::test]
    async fn non_json_input_fails() {
        let failure = process(".", "not json").await.unwrap_err();
        assert_eq!(failure.code, ErrorCode::ProcessorFailed);
    }

    #[test]
    fn cache_reuses_compiled_program() {
        let cache = ProgramCache::default();
        let first = cache.get_or_compile(".a").unwrap();
        let second = cache.get_or_compile(".a").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}

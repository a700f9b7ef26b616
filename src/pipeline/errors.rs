//! Problems found while loading pipeline files.

use std::fmt;

/// One problem in a pipeline file: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file label given to the parser, usually its path.
    pub file: String,
    /// Path of the offending field, such as `tasks[2].sql` or `triggers[0].to`. A YAML
    /// syntax error gives its line and column instead, and a problem of the whole file
    /// leaves it empty.
    pub field: String,
    /// Description of the problem and of the fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

/// Every problem found in one or more pipeline files. Displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineErrors {
    problems: Vec<Problem>,
}

impl PipelineErrors {
    pub(crate) fn new(problems: Vec<Problem>) -> PipelineErrors {
        debug_assert!(!problems.is_empty(), "an error without problems");
        PipelineErrors { problems }
    }

    /// Returns the problems in file order and, within a file, in the order they were
    /// found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineErrors {}

/// Collects the problems of one file under its label.
pub(crate) struct ProblemList {
    file: String,
    problems: Vec<Problem>,
}

impl ProblemList {
    pub(crate) fn new(file: &str) -> ProblemList {
        ProblemList {
            file: file.to_owned(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

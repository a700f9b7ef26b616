//! Loading of a pipeline file or a folder of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::errors::{PipelineErrors, Problem};
use super::{parse_pipeline, Pipeline};

/// Loads the pipeline file at `path`, or every `*.yaml` and `*.yml` file of the folder at
/// `path` in name order (not its subfolders). If any file is unreadable or invalid, or two
/// files use the same pipeline name, returns the problems of every file and no pipeline.
/// A folder without pipeline files gives an empty list.
pub fn load_path(path: &Path) -> Result<Vec<Pipeline>, PipelineErrors> {
    let files = match list_pipeline_files(path) {
        Ok(files) => files,
        Err(problem) => return Err(PipelineErrors::new(vec![problem])),
    };

    let mut pipelines = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let label = file.display().to_string();
        let yaml = match std::fs::read_to_string(file) {
            Ok(yaml) => yaml,
            Err(error) => {
                problems.push(file_problem(
                    &label,
                    format!("failed to read the file: {error}"),
                ));
                continue;
            }
        };
        match parse_pipeline(&label, &yaml) {
            Ok(pipeline) => pipelines.push((label, pipeline)),
            Err(errors) => problems.extend(errors.into_problems()),
        }
    }

    problems.extend(duplicate_name_problems(&pipelines));
    if !problems.is_empty() {
        return Err(PipelineErrors::new(problems));
    }
    Ok(pipelines
        .into_iter()
        .map(|(_, pipeline)| pipeline)
        .collect())
}

fn list_pipeline_files(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    let label = path.display().to_string();
    let metadata = std::fs::metadata(path)
        .map_err(|error| file_problem(&label, format!("failed to read the path: {error}")))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }

    let entries = std::fs::read_dir(path)
        .map_err(|error| file_problem(&label, format!("failed to list the folder: {error}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|error| file_problem(&label, format!("failed to list the folder: {error}")))?;
        let entry_path = entry.path();
        let is_yaml = entry_path
            .extension()
            .is_some_and(|extension| extension == "yaml" || extension == "yml");
        if is_yaml && entry_path.is_file() {
            files.push(entry_path);
        }
    }
    files.sort();
    Ok(files)
}

fn duplicate_name_problems(pipelines: &[(String, Pipeline)]) -> Vec<Problem> {
    let mut first_files: BTreeMap<&str, &str> = BTreeMap::new();
    let mut problems = Vec::new();
    for (label, pipeline) in pipelines {
        match first_files.get(pipeline.name.as_str()) {
            Some(first_label) => problems.push(Problem {
                file: label.clone(),
                field: "name".to_owned(),
                message: format!(
                    "duplicate pipeline name {:?}, already used by {first_label}; rename one of them",
                    pipeline.name
                ),
            }),
            None => {
                first_files.insert(&pipeline.name, label);
            }
        }
    }
    problems
}

fn file_problem(file: &str, message: String) -> Problem {
    Problem {
        file: file.to_owned(),
        field: String::new(),
        message,
    }
}

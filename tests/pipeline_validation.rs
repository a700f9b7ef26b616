//! Each kind of invalid pipeline file, with the field and the problem it reports.

use ylem_runtime::pipeline::{parse_pipeline, Problem};

/// Parses `yaml` as `bad.yaml`, expecting it to be rejected.
fn problems_of(yaml: &str) -> Vec<Problem> {
    match parse_pipeline("bad.yaml", yaml) {
        Ok(pipeline) => panic!("accepted an invalid pipeline: {pipeline:?}"),
        Err(errors) => errors.problems().to_vec(),
    }
}

/// Asserts that a problem at `field` mentions every item of `words`, and that every
/// problem names the file.
fn assert_problem(problems: &[Problem], field: &str, words: &[&str]) {
    let at_field: Vec<&Problem> = problems
        .iter()
        .filter(|problem| problem.field == field)
        .collect();
    assert!(
        !at_field.is_empty(),
        "no problem at {field}; problems: {problems:#?}"
    );
    let matching = at_field
        .iter()
        .any(|problem| words.iter().all(|word| problem.message.contains(word)));
    assert!(
        matching,
        "no problem at {field} mentions {words:?}; problems: {at_field:#?}"
    );
    for problem in problems {
        assert_eq!(problem.file, "bad.yaml");
    }
}

const TWO_QUERIES: &str = "
name: two
tasks:
  - {name: a, type: query, source: s, sql: SELECT 1}
  - {name: b, type: query, source: s, sql: SELECT 2}
";

#[test]
fn missing_required_fields() {
    let problems = problems_of(
        "
tasks:
  - {name: load, type: query}
  - {type: condition}
  - {name: post, type: api_call}
triggers:
  - {from: load}
",
    );

    assert_problem(&problems, "name", &["missing field"]);
    assert_problem(
        &problems,
        "tasks[0].source",
        &["missing field", "[sources]"],
    );
    assert_problem(&problems, "tasks[0].sql", &["missing field"]);
    assert_problem(&problems, "tasks[1].name", &["missing field"]);
    assert_problem(&problems, "tasks[1].expression", &["missing field"]);
    assert_problem(&problems, "tasks[2].url", &["missing field"]);
    assert_problem(&problems, "triggers[0].to", &["missing field"]);
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

#[test]
fn unknown_task_type_lists_valid_types() {
    let problems = problems_of("name: p\ntasks:\n  - {name: a, type: sql}\n  - {name: b}\n");

    assert_problem(
        &problems,
        "tasks[0].type",
        &["unknown task type \"sql\"", "query, condition", "for_each"],
    );
    assert_problem(&problems, "tasks[1].type", &["missing field", "query"]);
}

#[test]
fn unknown_fields_rejected() {
    let problems = problems_of(
        "
name: p
owner: me
tasks:
  - {name: a, type: query, source: s, sql: SELECT 1, query: SELECT 2, retries: 3}
triggers:
  - {from: a, to: b, when: always}
",
    );

    assert_problem(
        &problems,
        "owner",
        &[
            "unknown field",
            "name, description, schedule, tasks, triggers",
        ],
    );
    assert_problem(
        &problems,
        "tasks[0].query",
        &[
            "unknown field",
            "name, type, timeout_ms, max_attempts, source, sql",
        ],
    );
    assert_problem(&problems, "tasks[0].retries", &["unknown field"]);
    assert_problem(
        &problems,
        "triggers[0].when",
        &["unknown field", "from, to, type"],
    );
}

#[test]
fn wrong_value_types_rejected() {
    let problems = problems_of(
        "
name: p
tasks:
  - {name: a, type: query, source: s, sql: SELECT 1, timeout_ms: soon}
  - {name: b, type: api_call, url: 'http://127.0.0.1:1/x', headers: [a, b], accept_error_status: maybe}
  - {name: c, type: query, source: s, sql: SELECT 1, timeout_ms: 0}
",
    );

    assert_problem(&problems, "tasks[0].timeout_ms", &["invalid type"]);
    assert_problem(&problems, "tasks[1].headers", &["invalid type"]);
    assert_problem(&problems, "tasks[1].accept_error_status", &["invalid type"]);
    assert_problem(&problems, "tasks[2].timeout_ms", &["invalid value 0"]);
}

#[test]
fn duplicate_task_name_rejected() {
    let yaml = TWO_QUERIES.replace("name: b", "name: a");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "tasks[1].name",
        &["duplicate task name \"a\"", "tasks[0]"],
    );
}

#[test]
fn trigger_to_unknown_task_lists_tasks() {
    let yaml = format!("{TWO_QUERIES}triggers:\n  - {{from: a, to: c}}\n  - {{from: x, to: b}}\n");

    let problems = problems_of(&yaml);

    assert_problem(&problems, "triggers[0].to", &["unknown task \"c\"", "a, b"]);
    assert_problem(
        &problems,
        "triggers[1].from",
        &["unknown task \"x\"", "a, b"],
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn self_trigger_rejected() {
    let yaml = format!("{TWO_QUERIES}triggers:\n  - {{from: a, to: a}}\n");

    let problems = problems_of(&yaml);

    assert_problem(&problems, "triggers[0]", &["triggers itself"]);
}

#[test]
fn cycle_names_its_tasks() {
    let problems = problems_of(
        "
name: p
tasks:
  - {name: start, type: query, source: s, sql: SELECT 1}
  - {name: a, type: processor, jq: .}
  - {name: b, type: processor, jq: .}
  - {name: c, type: processor, jq: .}
triggers:
  - {from: start, to: a}
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: a}
",
    );

    assert_problem(&problems, "triggers[3]", &["cycle", "a -> b -> c -> a"]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn no_initial_task_rejected() {
    let yaml = format!("{TWO_QUERIES}triggers:\n  - {{from: a, to: b}}\n  - {{from: b, to: a}}\n");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "triggers",
        &["every task has an incoming trigger"],
    );
    assert_problem(&problems, "triggers[1]", &["cycle", "a -> b -> a"]);
}

#[test]
fn condition_trigger_from_query_rejected() {
    let yaml = format!("{TWO_QUERIES}triggers:\n  - {{from: a, to: b, type: condition_true}}\n");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "triggers[0].type",
        &[
            "condition_true fires only from a condition task",
            "query",
            "output",
        ],
    );
}

#[test]
fn output_trigger_from_condition_rejected() {
    let problems = problems_of(
        "
name: p
tasks:
  - {name: check, type: condition, expression: x > 1}
  - {name: b, type: processor, jq: .}
triggers:
  - {from: check, to: b}
",
    );

    assert_problem(
        &problems,
        "triggers[0].type",
        &["never fires", "condition_true or condition_false"],
    );
}

#[test]
fn unknown_trigger_type_rejected() {
    let yaml = format!("{TWO_QUERIES}triggers:\n  - {{from: a, to: b, type: on_error}}\n");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "triggers[0].type",
        &[
            "unknown trigger type",
            "output, condition_true, condition_false",
        ],
    );
}

#[test]
fn duplicate_trigger_rejected() {
    let yaml = format!(
        "{TWO_QUERIES}triggers:\n  - {{from: a, to: b}}\n  - {{from: a, to: b, type: output}}\n"
    );

    let problems = problems_of(&yaml);

    assert_problem(&problems, "triggers[1]", &["duplicate of triggers[0]"]);
}

#[test]
fn bad_cron_reports_croner_message() {
    let yaml = format!("{TWO_QUERIES}schedule:\n  cron: '61 * * * *'\n");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "schedule.cron",
        &["invalid cron pattern \"61 * * * *\""],
    );
}

#[test]
fn unknown_time_zone_rejected() {
    let yaml =
        format!("{TWO_QUERIES}schedule:\n  cron: '0 * * * *'\n  timezone: Europe/Atlantis\n");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "schedule.timezone",
        &["unknown time zone \"Europe/Atlantis\"", "IANA"],
    );
}

#[test]
fn empty_tasks_rejected() {
    let problems = problems_of("name: p\ntasks: []\n");

    assert_problem(&problems, "tasks", &["at least one task"]);
}

#[test]
fn invalid_pipeline_name_rejected() {
    let yaml = TWO_QUERIES.replace("name: two", "name: Penguin Report");

    let problems = problems_of(&yaml);

    assert_problem(
        &problems,
        "name",
        &["invalid pipeline name \"Penguin Report\"", "lowercase"],
    );
}

#[test]
fn yaml_syntax_error_names_line() {
    let problems = problems_of("name: p\ntasks:\n  - name: a\n    type: [query\n");

    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].field.starts_with("line "), "{problems:#?}");
    assert!(
        problems[0].message.contains("invalid YAML"),
        "{problems:#?}"
    );
}

#[test]
fn empty_file_rejected() {
    let problems = problems_of("");

    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].message.contains("expected a mapping"),
        "{problems:#?}"
    );
}

#[test]
fn transformer_checks_its_parameters() {
    let problems = problems_of(
        "
name: p
tasks:
  - {name: a, type: transformer, transform: encode_to, encode_format: json}
  - {name: b, type: transformer, transform: cast_to, json_path: '0.x'}
  - {name: c, type: transformer, transform: flatten}
  - {name: d, type: transformer, transform: str_split}
",
    );

    assert_problem(
        &problems,
        "tasks[0].encode_format",
        &["invalid value \"json\"", "csv, xml"],
    );
    assert_problem(
        &problems,
        "tasks[1].json_path",
        &["not used by transform cast_to"],
    );
    assert_problem(&problems, "tasks[1].cast_to", &["missing field"]);
    assert_problem(
        &problems,
        "tasks[2].transform",
        &["invalid value \"flatten\"", "extract_from_json"],
    );
    assert_problem(&problems, "tasks[3].delimiter", &["missing field"]);
}

#[test]
fn http_tasks_check_url_method_auth() {
    let problems = problems_of(
        "
name: p
tasks:
  - {name: a, type: api_call, url: 'ftp://host/x', method: FETCH}
  - {name: b, type: api_call, url: 'http://127.0.0.1:1/x', auth: {type: bearer}}
  - {name: c, type: notification, channel: email, url: 'http://127.0.0.1:1/x', body: hi}
  - {name: d, type: notification, channel: slack, url: 'https://hooks.example/x', body: hi, auth: {type: oauth}}
",
    );

    assert_problem(&problems, "tasks[0].url", &["invalid URL", "http://"]);
    assert_problem(
        &problems,
        "tasks[0].method",
        &["invalid HTTP method \"FETCH\"", "GET"],
    );
    assert_problem(&problems, "tasks[1].auth", &["token_env"]);
    assert_problem(
        &problems,
        "tasks[2].channel",
        &["invalid value \"email\"", "webhook, slack"],
    );
    assert_problem(&problems, "tasks[3].auth", &["oauth"]);
}

#[test]
fn problems_display_one_per_line() {
    let errors = parse_pipeline("bad.yaml", "name: Bad\ntasks: []\n").unwrap_err();

    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("bad.yaml: name: invalid pipeline name"),
        "{text}"
    );
    assert!(lines[1].starts_with("bad.yaml: tasks: "), "{text}");
}

#[test]
fn wrong_type_reported_once() {
    let problems =
        problems_of("name: p\ntasks:\n  - {name: a, type: query, source: s, sql: [1]}\n");

    assert_problem(&problems, "tasks[0].sql", &["invalid type"]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

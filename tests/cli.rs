//! The `ylem` binary as a user drives it: a daemon in one process, commands in others.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"
name: hello
tasks:
  - name: shape
    type: processor
    jq: '{greeting: ("hello " + .name)}'
  - name: check
    type: condition
    expression: greeting == "hello ylem"
triggers:
  - {from: shape, to: check}
"#;

const BROKEN: &str = r#"
name: Broken Name
tasks:
  - name: a
    type: querry
triggers:
  - {from: a, to: b}
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(folder: &Path, port: u16) -> std::path::PathBuf {
    let path = folder.join("config.toml");
    let text = format!(
        "[store]\nurl = \"sqlite://{}?mode=rwc\"\n\n[schedule_publisher]\npoll_interval_ms = 50\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        folder.join("store.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn ylem(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ylem"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the ylem binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(config: &Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_ylem"))
        .arg("--config")
        .arg(config)
        .args(["run", "--log", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("the daemon starts");
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not open its HTTP port"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

#[test]
fn invalid_pipeline_file_is_rejected_whole() {
    let folder = tempfile::tempdir().unwrap();
    let config = write_config(folder.path(), free_port());
    let pipelines = folder.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::write(pipelines.join("hello.yaml"), PIPELINE).unwrap();
    std::fs::write(pipelines.join("broken.yaml"), BROKEN).unwrap();

    let output = ylem(&config, &["pipeline", "apply", pipelines.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let errors = text(&output.stderr);
    assert!(errors.contains("broken.yaml: name:"), "{errors}");
    assert!(
        errors.contains("broken.yaml: tasks[0].type: unknown task type \"querry\""),
        "{errors}"
    );
    assert!(
        errors.contains("broken.yaml: triggers[0].to: unknown task \"b\""),
        "{errors}"
    );

    let listed = ylem(&config, &["pipeline", "list", "--json"]);
    let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        pipelines.as_array().map(Vec::len),
        Some(0),
        "nothing is stored"
    );
}

#[test]
fn invalid_arguments_exit_with_code_two() {
    let folder = tempfile::tempdir().unwrap();
    let config = write_config(folder.path(), free_port());
    let pipeline = folder.path().join("hello.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    assert!(
        ylem(&config, &["pipeline", "apply", pipeline.to_str().unwrap()])
            .status
            .success()
    );

    let bad_input = ylem(&config, &["pipeline", "run", "hello", "--input", "{oops"]);
    assert_eq!(bad_input.status.code(), Some(2));
    assert!(text(&bad_input.stderr).contains("--input is not valid JSON"));

    let unknown = ylem(&config, &["pipeline", "run", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("pipeline \"nope\" not found"));

    let bad_uuid = ylem(&config, &["runs", "show", "123"]);
    assert_eq!(bad_uuid.status.code(), Some(2));

    let bad_stage = ylem(&config, &["run", "--stages", "runner,cooker"]);
    assert_eq!(bad_stage.status.code(), Some(2));
    assert!(text(&bad_stage.stderr).contains("unknown stage \"cooker\""));
}

#[test]
fn invalid_config_names_the_key() {
    let folder = tempfile::tempdir().unwrap();
    let config = folder.path().join("config.toml");
    std::fs::write(&config, "[load_balancer]\nslow_pool_share = 2.0\n").unwrap();
    let output = ylem(&config, &["pipeline", "list"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("load_balancer.slow_pool_share"));
}

#[test]
fn commands_drive_a_running_daemon() {
    let folder = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(folder.path(), port);
    let pipeline = folder.path().join("hello.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let _daemon = start_daemon(&config, port);
    assert!(
        ylem(&config, &["pipeline", "apply", pipeline.to_str().unwrap()])
            .status
            .success()
    );

    let succeeded = ylem(
        &config,
        &[
            "pipeline",
            "run",
            "hello",
            "--input",
            r#"{"name": "ylem"}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(
        succeeded.status.code(),
        Some(0),
        "{}",
        text(&succeeded.stderr)
    );
    let detail: serde_json::Value = serde_json::from_slice(&succeeded.stdout).unwrap();
    assert_eq!(detail["status"], "succeeded");
    let run_uuid = detail["run_uuid"].as_str().unwrap().to_owned();
    let tasks = detail["task_runs"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks
        .iter()
        .all(|task| task["output_bytes"].as_u64().unwrap() > 0));

    // The condition is false for another name, which ends the run without a failure.
    let other = ylem(
        &config,
        &[
            "pipeline",
            "run",
            "hello",
            "--input",
            r#"{"name": "x"}"#,
            "--wait",
        ],
    );
    assert_eq!(other.status.code(), Some(0));

    let listed = ylem(&config, &["runs", "list", "--pipeline", "hello", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(2));

    let shown = ylem(&config, &["runs", "show", &run_uuid]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("shape"), "{shown}");
    assert!(shown.contains("succeeded"), "{shown}");

    let actors = ylem(
        &config,
        &[
            "actors",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--json",
        ],
    );
    let actors: serde_json::Value = serde_json::from_slice(&actors.stdout).unwrap();
    let paths: Vec<&str> = actors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|actor| actor["path"].as_str())
        .collect();
    for stage in [
        "generator",
        "publisher",
        "balancer",
        "runner",
        "triggers",
        "statistics",
    ] {
        assert!(paths.contains(&stage), "{paths:?}");
    }
}

#[test]
fn failed_run_exits_one_with_task_error() {
    let folder = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(folder.path(), port);
    let pipeline = folder.path().join("fails.yaml");
    std::fs::write(
        &pipeline,
        "name: fails\ntasks:\n  - name: each\n    type: for_each\n",
    )
    .unwrap();
    let _daemon = start_daemon(&config, port);
    assert!(
        ylem(&config, &["pipeline", "apply", pipeline.to_str().unwrap()])
            .status
            .success()
    );

    let failed = ylem(
        &config,
        &[
            "pipeline",
            "run",
            "fails",
            "--input",
            r#"{"a": 1}"#,
            "--wait",
        ],
    );
    assert_eq!(failed.status.code(), Some(1));
    let errors = text(&failed.stderr);
    assert!(errors.contains("task each failed"), "{errors}");
    assert!(errors.contains("10600"), "{errors}");
}

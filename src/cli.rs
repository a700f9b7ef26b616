//! Command-line interface: `ylem run` starts the daemon; the other commands read and write the
//! shared store, so they work from another terminal while the daemon runs.

mod commands;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::statistics::parse_duration;

/// Exit code of a command whose input (files, arguments) is invalid.
pub const EXIT_INVALID_INPUT: i32 = 2;
/// Exit code of `pipeline run --wait` when the run failed, and of failed commands.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Parser)]
#[command(
    name = "ylem",
    version,
    about = "Runs Ylem data pipelines as supervised actor trees"
)]
pub struct Cli {
    /// Configuration file; when the default file is missing, built-in defaults are used.
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        env = "YLEM_CONFIG"
    )]
    pub config: PathBuf,

    /// Log filter, e.g. `info` or `ylem_runtime=debug`; `info` for the daemon and `warn` for
    /// the other commands when unset.
    #[arg(long, global = true, env = "YLEM_LOG")]
    pub log: Option<String>,

    /// Write logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Runs the daemon: every stage, or those named with --stages.
    Run {
        /// Comma-separated stages: generator, publisher, balancer, runner, triggers, statistics.
        #[arg(
            long,
            default_value = "generator,publisher,balancer,runner,triggers,statistics"
        )]
        stages: String,
        /// Pipeline files or folders to apply before starting (added to pipelines.apply_on_start).
        #[arg(long)]
        apply: Vec<PathBuf>,
        /// Address of the HTTP endpoint, overriding http.listen; `off` serves none. Each
        /// process on one machine needs its own address.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Applies, lists and runs pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Lists, shows and cancels pipeline runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Prints run statistics.
    #[command(subcommand)]
    Stats(StatsCommand),
    /// Prints the supervision tree of a running daemon: states, restarts, last failures.
    Actors {
        /// Address of the daemon's HTTP endpoint.
        #[arg(long, default_value = "http://127.0.0.1:7335")]
        url: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Validates and stores a pipeline file or a folder of them; any invalid file rejects all.
    Apply {
        path: PathBuf,
        /// Validate only; store nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Lists the applied pipelines.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Starts a manual run; the daemon's publisher picks it up.
    Run {
        name: String,
        /// Run input as JSON, given to the initial tasks.
        #[arg(long)]
        input: Option<String>,
        /// Wait for the run to end; exit 0 when it succeeded, 1 when it failed.
        #[arg(long)]
        wait: bool,
        /// Maximum wait in seconds with --wait.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Lists recent runs, newest first.
    List {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Shows one run with every task run.
    Show {
        run_uuid: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancels a running run: its queued tasks and scheduled retries are skipped.
    Cancel { run_uuid: String },
}

#[derive(Subcommand)]
pub enum StatsCommand {
    /// Run duration percentiles and outcome counts of a pipeline, from the statistics backend.
    Pipeline {
        name: String,
        /// Number of recent runs the percentiles cover.
        #[arg(long, default_value_t = 100)]
        last_runs: u32,
        /// Count only results executed within this long before now, e.g. 30m, 24h or 7d;
        /// every stored result when left out.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Task runs slower than a threshold, newest first.
    SlowTasks {
        /// Lists task runs that took longer than this, in milliseconds.
        #[arg(long)]
        threshold_ms: u64,
        /// Lists task runs executed within this long before now, e.g. 30m, 24h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Duration,
        /// Maximum task runs listed.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        restore_default_sigpipe();
    }
    let default_filter = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_filter), cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(commands::dispatch(cli))
}

/// Lets a listing command end quietly when its reader goes away (`ylem runs list | head`), as
/// other command-line tools do. Rust ignores SIGPIPE by default, which turns a closed pipe into
/// a panic on the next print. The daemon keeps that default: its logs must not kill it.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("warning: invalid log filter {filter:?} ({err}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for log files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

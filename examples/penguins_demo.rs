//! Helpers for the penguin example pipelines in `examples/pipelines`.
//!
//! `prepare` loads `examples/data/penguins.csv` into the SQLite database that the pipelines
//! query as source `penguins`. `receive` is an HTTP server that replaces the webhook and API
//! endpoints the pipelines post to, so a run can be followed without any outside service.
//!
//! ```text
//! cargo run --example penguins_demo -- prepare --database examples/data/penguins.db
//! cargo run --example penguins_demo -- receive --listen 127.0.0.1:8089 --log examples/data/webhooks.log
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::{Parser, Subcommand};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, SqliteConnection};
use tokio::io::AsyncWriteExt;

/// Columns of the CSV file, in file order. `prepare` rejects a file with another header.
const CSV_COLUMNS: [&str; 8] = [
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
];

/// The text the CSV file uses for a missing value.
const MISSING_VALUE: &str = "NA";

/// Request bodies smaller than this are printed in full, and larger ones only by size.
const PRINTED_BODY_MAX_BYTES: usize = 2048;

const CREATE_TABLE: &str = "CREATE TABLE penguins (
    species TEXT NOT NULL,
    island TEXT NOT NULL,
    bill_length_mm REAL,
    bill_depth_mm REAL,
    flipper_length_mm INTEGER,
    body_mass_g INTEGER,
    sex TEXT,
    year INTEGER NOT NULL
)";

const INSERT_ROW: &str = "INSERT INTO penguins
    (species, island, bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex, year)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

#[derive(Parser)]
#[command(about = "Prepares the penguin data and receives the example pipelines' HTTP posts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates (or atomically replaces) a SQLite database with table `penguins` from the CSV.
    Prepare {
        /// SQLite database file to write.
        #[arg(long)]
        database: PathBuf,
        /// Palmer penguins CSV file to load.
        #[arg(long, default_value = "examples/data/penguins.csv")]
        csv: PathBuf,
    },
    /// Runs an HTTP server that accepts POST requests on any path and prints each one.
    Receive {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        /// File that each request is appended to as one JSON line (time, path and body).
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

/// One CSV row, typed as in the `penguins` table, with `None` for a missing value.
struct PenguinRow {
    species: String,
    island: String,
    bill_length_mm: Option<f64>,
    bill_depth_mm: Option<f64>,
    flipper_length_mm: Option<i64>,
    body_mass_g: Option<i64>,
    sex: Option<String>,
    year: i64,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Prepare { database, csv } => prepare(&csv, &database).await,
            Command::Receive { listen, log } => receive(listen, log).await,
        }
    });
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// Loads the CSV into a temporary database beside `database`, then renames it over
/// `database`, so a reader never sees a half-written file.
async fn prepare(csv_path: &Path, database: &Path) -> anyhow::Result<()> {
    let rows = read_csv(csv_path)?;

    let folder = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!(
            "the folder {} of --database {} does not exist; create it or pass another path",
            folder.display(),
            database.display()
        );
    }
    let file_name = database
        .file_name()
        .with_context(|| format!("--database {} has no file name", database.display()))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = database.with_file_name(temporary_name);
    remove_if_present(&temporary)?;

    let written = write_database(&temporary, &rows).await;
    if let Err(error) = written {
        // Removal is best effort because the error to report is `error`.
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }

    std::fs::rename(&temporary, database).with_context(|| {
        format!(
            "failed to rename {} to {}",
            temporary.display(),
            database.display()
        )
    })?;
    println!(
        "wrote {} rows from {} to table penguins in {}",
        rows.len(),
        csv_path.display(),
        database.display()
    );
    Ok(())
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error)
            .with_context(|| format!("failed to remove the stale file {}", path.display())),
    }
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<PenguinRow>> {
    let mut reader = match csv::Reader::from_path(path) {
        Ok(reader) => reader,
        Err(error) => bail!(
            "failed to open the penguin CSV {}: {error}; run from the repository root or pass --csv PATH",
            path.display()
        ),
    };

    let header = reader
        .headers()
        .with_context(|| format!("failed to read the header of {}", path.display()))?;
    if header.iter().ne(CSV_COLUMNS) {
        bail!(
            "{} has the header {:?}, but the expected columns are {:?}; pass the Palmer penguins CSV with --csv",
            path.display(),
            header.iter().collect::<Vec<_>>(),
            CSV_COLUMNS
        );
    }

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("failed to read {}", path.display()))?;
        // The reader sets `position` on every record it returns.
        let line = record.position().map_or(0, |position| position.line());
        let row = parse_row(&record)
            .with_context(|| format!("invalid value in {} line {line}", path.display()))?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(record: &csv::StringRecord) -> anyhow::Result<PenguinRow> {
    let field = |index: usize| record.get(index).unwrap_or(MISSING_VALUE);
    let required = |index: usize| -> anyhow::Result<String> {
        optional_text(field(index))
            .with_context(|| format!("column {} must not be {MISSING_VALUE}", CSV_COLUMNS[index]))
    };
    Ok(PenguinRow {
        species: required(0)?,
        island: required(1)?,
        bill_length_mm: parse_optional(CSV_COLUMNS[2], field(2))?,
        bill_depth_mm: parse_optional(CSV_COLUMNS[3], field(3))?,
        flipper_length_mm: parse_optional(CSV_COLUMNS[4], field(4))?,
        body_mass_g: parse_optional(CSV_COLUMNS[5], field(5))?,
        sex: optional_text(field(6)),
        year: parse_optional(CSV_COLUMNS[7], field(7))?
            .with_context(|| format!("column year must not be {MISSING_VALUE}"))?,
    })
}

fn optional_text(value: &str) -> Option<String> {
    (value != MISSING_VALUE).then(|| value.to_owned())
}

fn parse_optional<T>(column: &str, value: &str) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if value == MISSING_VALUE {
        return Ok(None);
    }
    match value.parse() {
        Ok(parsed) => Ok(Some(parsed)),
        Err(error) => bail!("column {column} has {value:?}, which is not a number ({error})"),
    }
}

async fn write_database(path: &Path, rows: &[PenguinRow]) -> anyhow::Result<()> {
    // The rollback journal, unlike WAL, leaves no -wal or -shm file beside the database, so
    // the rename moves the whole database.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete);
    let mut connection = SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("failed to create the database {}", path.display()))?;

    let mut transaction = connection.begin().await?;
    sqlx::query(CREATE_TABLE)
        .execute(&mut *transaction)
        .await
        .context("failed to create table penguins")?;
    for row in rows {
        sqlx::query(INSERT_ROW)
            .bind(&row.species)
            .bind(&row.island)
            .bind(row.bill_length_mm)
            .bind(row.bill_depth_mm)
            .bind(row.flipper_length_mm)
            .bind(row.body_mass_g)
            .bind(&row.sex)
            .bind(row.year)
            .execute(&mut *transaction)
            .await
            .context("failed to insert a row into table penguins")?;
    }
    transaction.commit().await?;

    connection
        .close()
        .await
        .with_context(|| format!("failed to close the database {}", path.display()))
}

/// State shared by the request handlers.
struct Receiver {
    log: Option<tokio::sync::Mutex<tokio::fs::File>>,
    log_path: Option<PathBuf>,
}

async fn receive(listen: SocketAddr, log_path: Option<PathBuf>) -> anyhow::Result<()> {
    let log = match &log_path {
        Some(path) => Some(tokio::sync::Mutex::new(open_log(path).await?)),
        None => None,
    };
    let receiver = Arc::new(Receiver { log, log_path });

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "failed to listen on {listen}: the address is already in use; stop the process that \
             holds it (`ss -ltnp 'sport = :{}'` shows it) or pass --listen with another port",
            listen.port()
        ),
        Err(error) => bail!("failed to listen on {listen}: {error}"),
    };

    let app = Router::new()
        .fallback(handle_request)
        .with_state(Arc::clone(&receiver));
    match &receiver.log_path {
        Some(path) => println!(
            "listening on http://{listen}; appending request bodies to {}",
            path.display()
        ),
        None => println!("listening on http://{listen}"),
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    println!("receiver stopped");
    Ok(())
}

async fn open_log(path: &Path) -> anyhow::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| {
            format!(
                "failed to open the log file {}; check that its folder exists and is writable",
                path.display()
            )
        })
}

/// Completes on Ctrl-C or, on Unix, SIGTERM, which is what `kill` sends.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            eprintln!("error: failed to listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                eprintln!("error: failed to listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Prints the request, appends it to the log file and returns a small JSON receipt, which
/// becomes the output of an `api_call` task.
async fn handle_request(
    State(receiver): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let received_at = chrono::Local::now();
    let path = uri.path().to_owned();
    if method != Method::POST {
        println!(
            "{} {method} {path} rejected: only POST is accepted",
            received_at.format("%Y-%m-%d %H:%M:%S")
        );
        return (StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted\n").into_response();
    }

    print_request(&received_at, &path, &body);

    if let Some(log) = &receiver.log {
        let line = log_line(&received_at, &path, &body);
        let mut file = log.lock().await;
        if let Err(error) = file.write_all(line.as_bytes()).await {
            let log_path = receiver.log_path.as_deref().unwrap_or(Path::new("?"));
            eprintln!(
                "error: failed to append the request to {}: {error}",
                log_path.display()
            );
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to log the request\n",
            )
                .into_response();
        }
    }

    let receipt = serde_json::json!({"received": true, "path": path, "bytes": body.len()});
    (StatusCode::OK, axum::Json(receipt)).into_response()
}

fn print_request(received_at: &chrono::DateTime<chrono::Local>, path: &str, body: &[u8]) {
    let time = received_at.format("%Y-%m-%d %H:%M:%S");
    let size = body.len();
    if size < PRINTED_BODY_MAX_BYTES {
        println!(
            "{time} POST {path} {size} bytes {}",
            String::from_utf8_lossy(body)
        );
    } else {
        println!("{time} POST {path} {size} bytes (body not printed: {PRINTED_BODY_MAX_BYTES} bytes or more)");
    }
}

/// Formats one JSON line for the log file. A body that is not JSON is stored as a string.
fn log_line(received_at: &chrono::DateTime<chrono::Local>, path: &str, body: &[u8]) -> String {
    let body_value = serde_json::from_slice::<serde_json::Value>(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
    let record = serde_json::json!({
        "received_at": received_at.to_rfc3339(),
        "path": path,
        "body": body_value,
    });
    format!("{record}\n")
}

//! `barkeep` command line: thin on purpose; everything lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use barkeep::config::{Config, LogFormat, OpenFiles};

#[derive(Parser)]
#[command(
    name = "barkeep",
    version,
    about = "Market-data sidecar: fresh bars and exact indicators for a trading bot"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (the default). Configuration comes from the environment and `.env`.
    Run,
    /// Run OHLCV bars from a CSV file through the validator and the indicators; prints one JSON
    /// object per bar on stdout, rejected rows on stderr.
    Replay {
        /// CSV with a time column first and open/high/low/close[/volume] columns.
        #[arg(long)]
        input: PathBuf,
        /// Symbol name to put in each output line.
        #[arg(long)]
        symbol: Option<String>,
    },
    /// Download `HISTORY_DAYS` of history into SQLite (resumable, idempotent), with a progress
    /// bar; the next `run` warms its indicators from it.
    Bootstrap,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a broken one is worth saying.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("barkeep: error: .env: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("barkeep: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    barkeep::secrets::register(barkeep::secrets::of_config(&config));
    if let Err(e) = init_tracing(config.log_format, &config.log_filter) {
        eprintln!("barkeep: configuration error: invalid RUST_LOG: {e}");
        return ExitCode::from(2);
    }
    // Checked against the hard limit already; the soft one is often lower than the pool needs.
    if let Err(e) = OpenFiles::raise_soft_to(config.open_files_needed()) {
        tracing::warn!(error = %e, "open-files limit not raised");
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config),
        Command::Bootstrap => bootstrap(config),
        Command::Replay { input, symbol } => replay(&config, &input, symbol.as_deref()),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("barkeep: error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn bootstrap(config: Config) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(barkeep::app::bootstrap(
        config,
        std::io::stderr().is_terminal(),
    )) {
        Ok(stats) => {
            eprintln!(
                "barkeep: bootstrap stored {} bars ({} rejected, {} windows failed, {} windows of the past skipped: no source had history that far back)",
                stats.stored, stats.rejected, stats.failed_windows, stats.skipped_windows
            );
            if stats.failed_windows > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("barkeep: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(barkeep::app::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(error = %e, exit_code = code, "barkeep stopped with an error");
            eprintln!("barkeep: error: {e}");
            ExitCode::from(code)
        }
    }
}

fn replay(config: &Config, input: &std::path::Path, symbol: Option<&str>) -> ExitCode {
    let file = match std::fs::File::open(input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("barkeep: error: cannot open {}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    match barkeep::replay::replay(
        config,
        std::io::BufReader::new(file),
        symbol,
        stdout,
        std::io::stderr(),
    ) {
        Ok(stats) => {
            tracing::info!(
                printed = stats.printed,
                rejected = stats.rejected,
                "replay done"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("barkeep: error: {}: {e}", input.display());
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber with `filter` (`RUST_LOG`, validated by the configuration).
fn init_tracing(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(barkeep::secrets::ScrubbingWriter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM (pm2 and systemd stop with SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

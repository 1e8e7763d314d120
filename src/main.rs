//! The `likewise` command: parses the command line, loads settings, starts logging,
//! builds the application and runs it until SIGINT or SIGTERM; or takes and restores
//! backups (the work is in `likewise::backup`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use likewise::config::{self, Durability, FileSettings, Overrides};
use likewise::startup::Application;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "likewise",
    version,
    about = "A social app's backend in one binary: storage, durable task queue, websockets and Redis-compatible pub/sub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Write a consistent snapshot of a data directory to a file, also while the
    /// server runs.
    Backup(BackupArgs),
    /// Restore a snapshot into a data directory (the server must be stopped).
    Restore(RestoreArgs),
}

#[derive(Args)]
struct BackupArgs {
    /// Data directory to back up.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Backup file to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    /// Backup file to read.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Data directory to restore into; created if missing.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Replace the contents of a non-empty data directory.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file (flags and environment variables override it).
    #[arg(long, env = "LIKEWISE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [default: ./likewise-data].
    #[arg(long, env = "LIKEWISE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// HTTP and websocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "LIKEWISE_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// RESP (Redis protocol) listen address, or `off` [default: 127.0.0.1:6379].
    #[arg(long, env = "LIKEWISE_RESP", value_name = "ADDR")]
    resp: Option<String>,
    /// Task worker concurrency [default: cores x 4].
    #[arg(long, env = "LIKEWISE_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// `sync` (flush before acknowledging) or `relaxed` [default: sync].
    #[arg(long, env = "LIKEWISE_DURABILITY", value_name = "MODE")]
    durability: Option<Durability>,
    /// Also create demo users (with the passwords printed at start-up), posts,
    /// comments and likes; a second start adds nothing twice.
    #[arg(long)]
    demo: bool,
}

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    likewise::telemetry::init_logging();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
    }
}

fn backup(args: BackupArgs) -> ExitCode {
    match likewise::backup::backup(&args.data, &args.out) {
        Ok((summary, mode)) => {
            let how = match mode {
                likewise::backup::Mode::Online => "from the running server",
                likewise::backup::Mode::Offline => "from the stopped store",
            };
            println!(
                "backup written to {} ({} records, {} bytes, {how})",
                args.out.display(),
                summary.records,
                summary.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("likewise: backup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(args: RestoreArgs) -> ExitCode {
    match likewise::backup::restore(&args.from, &args.data, args.force) {
        Ok(summary) => {
            println!(
                "restored {} records into {}",
                summary.records,
                args.data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("likewise: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match FileSettings::load(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("likewise: {e}");
                return ExitCode::from(2);
            }
        },
        None => FileSettings::default(),
    };
    let overrides = Overrides {
        data: args.data,
        http: args.http,
        resp: args.resp,
        resp_password: env_secret("LIKEWISE_RESP_PASSWORD"),
        admin_token: env_secret("LIKEWISE_ADMIN_TOKEN"),
        workers: args.workers,
        durability: args.durability,
        demo: args.demo,
    };
    let settings = match config::resolve(file, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("likewise: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("likewise: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let app = Application::build(settings).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        app.run_until_stopped(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("likewise: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

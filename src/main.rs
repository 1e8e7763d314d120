//! The `likewise` command: parses the command line, loads settings, starts logging,
//! builds the application and runs it until SIGINT or SIGTERM; or takes and restores
//! backups (the work is in `likewise::backup`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use likewise::cli::{BackupArgs, Cli, Command, DataDir, ManArgs, RestoreArgs, ServeArgs};
use likewise::config::{self, FileSettings, Overrides};
use likewise::startup::Application;
use tokio_util::sync::CancellationToken;

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Man(_)) {
        // Everything the server and the backup tools create — the data directory,
        // sled's files (whose modes sled does not let us choose), the control socket,
        // backups — is for this user only: the data holds password hashes and private
        // messages. (Manual pages are for everyone.)
        #[cfg(unix)]
        // SAFETY: umask only sets the process's file mode mask; it cannot fail and has
        // no memory preconditions. No thread has been started yet.
        unsafe {
            libc::umask(0o077);
        }
    }
    likewise::telemetry::init_logging();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
        Command::Man(args) => man(args),
    }
}

/// The data directory named by `--data`, `LIKEWISE_DATA` or the config file's `data`.
fn data_dir(dir: DataDir) -> Result<PathBuf, ExitCode> {
    let file = match &dir.config {
        Some(path) => FileSettings::load(path).map_err(|e| {
            eprintln!("likewise: {e}");
            ExitCode::from(2)
        })?,
        None => FileSettings::default(),
    };
    let overrides = Overrides {
        data: dir.data,
        ..Overrides::default()
    };
    config::resolve(file, overrides)
        .map(|settings| settings.data)
        .map_err(|e| {
            eprintln!("likewise: {e}");
            ExitCode::from(2)
        })
}

fn man(args: ManArgs) -> ExitCode {
    match likewise::cli::write_man_pages(&args.out) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("likewise: cannot write the manual pages: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backup(args: BackupArgs) -> ExitCode {
    let data = match data_dir(args.dir) {
        Ok(data) => data,
        Err(code) => return code,
    };
    match likewise::backup::backup(&data, &args.out) {
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
    let data = match data_dir(args.dir) {
        Ok(data) => data,
        Err(code) => return code,
    };
    match likewise::backup::restore(&args.from, &data, args.force) {
        Ok(summary) => {
            println!(
                "restored {} records into {}",
                summary.records,
                data.display()
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
        // The handlers are in place before anything is bound or logged: a SIGTERM
        // sent as soon as `listening` appears (or during start-up) is a graceful stop,
        // never the default action that kills the process.
        let shutdown = CancellationToken::new();
        let signals = Signals::install()?;
        tokio::spawn(signals.wait(shutdown.clone()));
        let app = Application::build(settings).await?;
        app.run_until_stopped(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Not eprintln!, which panics when stderr is gone: the exit status must
            // still say that the server failed.
            let _ = writeln!(std::io::stderr(), "likewise: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, registered with the runtime (so they no longer kill the process).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Cancels `shutdown` at the first signal.
    async fn wait(self, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            let Signals {
                mut interrupt,
                mut terminate,
            } = self;
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            // Cancelled first: nothing that happens while logging may keep the
            // server from stopping.
            shutdown.cancel();
            tracing::info!("{name} received");
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        }
    }
}

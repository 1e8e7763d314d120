//! The `likewise` command: parses the command line, loads settings, starts logging,
//! builds the application and runs it until SIGINT or SIGTERM; or takes and restores
//! backups (the work is in `likewise::backup`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use likewise::cli::{
    AdminTokenArgs, BackupArgs, Cli, Command, DataDir, EdgeArgs, ManArgs, RestoreArgs, ServeArgs,
};
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
        Command::Edge(args) => edge(args),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
        Command::AdminToken(args) => admin_token(args),
        Command::Man(args) => man(args),
    }
}

/// The data directory named by `--data`, `LIKEWISE_DATA` or the config file's `data`.
fn data_dir(dir: DataDir) -> Result<PathBuf, ExitCode> {
    settings_for(dir).map(|settings| settings.data)
}

/// The settings of a command that works on a data directory: the config file's, with
/// `--data` and the environment's secrets on top.
fn settings_for(dir: DataDir) -> Result<config::Settings, ExitCode> {
    let file = match &dir.config {
        Some(path) => FileSettings::load(path).map_err(|e| {
            eprintln!("likewise: {e}");
            ExitCode::from(2)
        })?,
        None => FileSettings::default(),
    };
    let overrides = Overrides {
        data: dir.data,
        admin_token: env_secret("LIKEWISE_ADMIN_TOKEN"),
        ..Overrides::default()
    };
    config::resolve(file, overrides).map_err(|e| {
        eprintln!("likewise: {e}");
        ExitCode::from(2)
    })
}

fn admin_token(args: AdminTokenArgs) -> ExitCode {
    let settings = match settings_for(args.dir) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let data = settings.data.clone();
    if settings.admin_token.is_some() {
        eprintln!(
            "likewise: the admin token is set by LIKEWISE_ADMIN_TOKEN or the config file's admin_token, not by {}: change it there",
            data.display()
        );
        return if args.rotate {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    if args.rotate {
        match likewise::control::request_admin_token_rotation(&data) {
            Ok(Some(token)) => {
                println!("{token}");
                eprintln!(
                    "likewise: the admin token of the server running on {} is replaced; the old one no longer works",
                    data.display()
                );
                return ExitCode::SUCCESS;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("likewise: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if likewise::control::server_running(&data) {
        eprintln!(
            "likewise: the server running on {} has an admin token; only its SHA-256 is stored, so it cannot be shown again: `likewise admin-token --rotate` replaces it",
            data.display()
        );
        return ExitCode::SUCCESS;
    }
    if !data.join("db").exists() {
        eprintln!(
            "likewise: no likewise data in {}: the first `likewise serve` creates it and prints a new admin token",
            data.display()
        );
        return ExitCode::FAILURE;
    }
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|runtime| runtime.block_on(offline_admin_token(&settings, args.rotate)));
    match outcome {
        Ok(Some(token)) => {
            println!("{token}");
            eprintln!(
                "likewise: the admin token of {} is replaced; the old one no longer works",
                data.display()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "likewise: {} has an admin token; only its SHA-256 is stored, so it cannot be shown again: `likewise admin-token --rotate` replaces it",
                data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("likewise: {e}");
            ExitCode::FAILURE
        }
    }
}

/// With no server running: replaces the token (`rotate`) or checks that one is set.
/// Returns the new token when there is one to show.
async fn offline_admin_token(
    settings: &config::Settings,
    rotate: bool,
) -> Result<Option<String>, String> {
    use likewise::domain::AdminToken;
    let store = likewise::store::Store::open_with(&settings.data, &settings.store()).map_err(
        |e| match e {
            likewise::store::Error::InUse => format!(
                "{} is in use by another process (a backup or restore?); try again when it is done",
                settings.data.display()
            ),
            e => format!("cannot open the store in {}: {e}", settings.data.display()),
        },
    )?;
    let (admin, generated) = AdminToken::load_or_create(&store, None).map_err(|e| e.to_string())?;
    let token = match generated {
        Some(token) => Some(token),
        None if rotate => Some(admin.rotate(&store).await.map_err(|e| e.to_string())?),
        None => None,
    };
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(token)
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
    let data = settings.data.clone();
    let store = settings.store();
    run_until_signalled(
        |shutdown| async move {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown).await
        },
        // Every handle on the store is gone with the runtime: replay sled's log into
        // a snapshot now, so that the next start does not.
        move || {
            let started = std::time::Instant::now();
            match likewise::store::checkpoint_closed(&data, &store, Duration::from_secs(10)) {
                Ok(()) => tracing::info!(
                    "store log replayed into a snapshot for a quick next start in {} ms",
                    started.elapsed().as_millis()
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not replay the store's log at this stop; the next start will"
                ),
            }
        },
    )
}

fn edge(args: EdgeArgs) -> ExitCode {
    use likewise::edge::{self, EdgeFile, EdgeOverrides};
    let file = match &args.config {
        Some(path) => match EdgeFile::load(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("likewise: {e}");
                return ExitCode::from(2);
            }
        },
        None => EdgeFile::default(),
    };
    let overrides = EdgeOverrides {
        primary: args.primary,
        http: args.http,
        admin_token: env_secret("LIKEWISE_ADMIN_TOKEN"),
        cluster_redis: env_secret(likewise::config::CLUSTER_REDIS_ENV),
    };
    let settings = match edge::resolve(file, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("likewise: {e}");
            return ExitCode::from(2);
        }
    };
    run_until_signalled(
        |shutdown| async move {
            let edge = edge::Edge::build(settings).await?;
            edge.run_until_stopped(shutdown).await
        },
        || {},
    )
}

/// Runs a server on a new runtime until SIGINT or SIGTERM: `run` gets the token
/// those signals cancel. The handlers are in place before `run` binds or logs
/// anything, so a SIGTERM sent as soon as `listening` appears (or during start-up)
/// is a graceful stop, never the default action that kills the process. Once `run`
/// has ended well and the runtime is gone, with every task it ran, `after` runs.
fn run_until_signalled<F, Fut>(run: F, after: impl FnOnce()) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
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
        let shutdown = CancellationToken::new();
        let signals = Signals::install()?;
        tokio::spawn(signals.wait(shutdown.clone()));
        run(shutdown).await
    });
    // Whatever a handler left behind (a blocking call that ignores the stop) gets
    // a few seconds, not forever.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => {
            after();
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line on stderr, which is where the log goes too: not both. Not
            // eprintln!, which panics when stderr is gone: the exit status must still
            // say that the server failed.
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

//! The command line of `likewise`: its subcommands and flags, declared once with clap.
//!
//! `main.rs` parses it and acts; the packages' manual pages are rendered from the same
//! declarations ([`write_man_pages`]), so `--help` and `man likewise-serve` never
//! disagree. Nothing here reads files or starts anything.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::store::Durability;

/// Environment variables that `serve` reads besides the ones tied to a flag.
const SERVE_ENV_HELP: &str = "\
Environment:
  LIKEWISE_ADMIN_TOKEN     the admin token (Bearer) for /api/admin/*, /dashboard and
                           /metrics consumers; without it one is generated on the first
                           start, printed once and stored hashed
  LIKEWISE_RESP_PASSWORD   the RESP (Redis protocol) password; without one the RESP
                           listener may only bind to a loopback address
  LIKEWISE_CLUSTER_REDIS   the cluster bus's Redis, redis://[:PASSWORD@]HOST:PORT[/DB]:
                           events are shared with the cluster's other nodes
  RUST_LOG                 log filter, e.g. info (default) or debug

Flags override environment variables, which override the config file, which overrides
the defaults. SIGINT and SIGTERM shut down gracefully.";

/// What `edge --help` adds.
const EDGE_HELP: &str = "\
An edge owns no data: /api/, / , /dashboard and /assets/ are forwarded to the primary
(which must list the edge in [limits] trusted_proxies to see each client's address).
With the cluster's Redis and the primary's admin token it also serves /ws and
/socket.io/ itself: events of every node reach it through Redis, tokens, tickets and
replays are checked with the primary. /healthz and /metrics are the edge's own. The
config file holds `http`, `admin_token`, `allowed_origins`, an [edge] section
(primary, connect_timeout_ms, answer_timeout_ms, pool_idle_ms, pool_max_idle,
auth_cache_ms, lookup_timeout_ms), [cluster] and [limits].

Environment:
  LIKEWISE_ADMIN_TOKEN     the primary's admin token (the edge asks the primary with it)
  LIKEWISE_CLUSTER_REDIS   the cluster's Redis, redis://[:PASSWORD@]HOST:PORT[/DB]
  RUST_LOG                 log filter, e.g. info (default) or debug

Flags override environment variables, which override the config file, which overrides
the defaults. SIGINT and SIGTERM shut down gracefully.";

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "likewise",
    version,
    about = "A social app's backend in one binary: storage, durable task queue, websockets and Redis-compatible pub/sub"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    #[command(after_help = SERVE_ENV_HELP)]
    Serve(ServeArgs),
    /// Run an edge: serve clients' connections and forward the API to the primary.
    #[command(after_help = EDGE_HELP)]
    Edge(EdgeArgs),
    /// Write a consistent snapshot of a data directory to a file, also while the
    /// server runs.
    Backup(BackupArgs),
    /// Restore a snapshot into a data directory (the server must be stopped).
    Restore(RestoreArgs),
    /// Say whether a data directory has an admin token, or replace it with a new one
    /// (--rotate), also while the server runs.
    AdminToken(AdminTokenArgs),
    /// Write the manual pages (roff) of every subcommand into a directory.
    #[command(hide = true)]
    Man(ManArgs),
}

/// Where the data directory comes from for commands that work on one.
#[derive(Args, Debug)]
pub struct DataDir {
    /// Data directory [default: the config file's `data`, else ./likewise-data].
    #[arg(long, env = "LIKEWISE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TOML config file to take the data directory from (as `serve --config`).
    #[arg(long, env = "LIKEWISE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `likewise backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The data directory to back up.
    #[command(flatten)]
    pub dir: DataDir,
    /// Backup file to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `likewise restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup file to read.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to restore into; created if missing.
    #[command(flatten)]
    pub dir: DataDir,
    /// Replace the contents of a non-empty data directory.
    #[arg(long)]
    pub force: bool,
}

/// `likewise admin-token`.
#[derive(Args, Debug)]
pub struct AdminTokenArgs {
    /// The data directory whose admin token to show the state of or replace.
    #[command(flatten)]
    pub dir: DataDir,
    /// Replace the admin token: the new one is printed on stdout (only there, only
    /// now), and the old one stops working at once, in the running server too.
    #[arg(long)]
    pub rotate: bool,
}

/// `likewise man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write `likewise.1`, `likewise-serve.1`, ... into (created if missing).
    #[arg(value_name = "DIR")]
    pub out: PathBuf,
}

/// `likewise serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (flags and environment variables override it).
    #[arg(long, env = "LIKEWISE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: the config file's `data`, else ./likewise-data, or ./likewise-demo with --demo].
    #[arg(long, env = "LIKEWISE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// HTTP and websocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "LIKEWISE_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// RESP (Redis protocol) listen address, or `off` [default: 127.0.0.1:6379].
    #[arg(long, env = "LIKEWISE_RESP", value_name = "ADDR")]
    pub resp: Option<String>,
    /// Task worker concurrency [default: cores x 4].
    #[arg(long, env = "LIKEWISE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// `sync` (flush before acknowledging) or `relaxed` [default: sync].
    #[arg(long, env = "LIKEWISE_DURABILITY", value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Also create demo users (with the passwords printed at start-up), posts,
    /// comments and likes; a second start adds nothing twice.
    #[arg(long)]
    pub demo: bool,
}

/// `likewise edge`.
#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// TOML config file of the edge (flags and environment variables override it).
    #[arg(long, env = "LIKEWISE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The primary's base URL, e.g. http://10.0.0.1:8080 [default: the config file's `[edge] primary`].
    #[arg(long, env = "LIKEWISE_PRIMARY", value_name = "URL")]
    pub primary: Option<String>,
    /// HTTP listen address of the edge [default: 127.0.0.1:8080].
    #[arg(long, env = "LIKEWISE_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
}

/// Renders the manual page of the command and of each visible subcommand into `dir`,
/// one roff file each (`likewise.1`, `likewise-serve.1`, ...); returns the paths written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let root = Cli::command().disable_help_subcommand(true);
    let mut written = Vec::new();
    let mut page = |cmd: clap::Command, name: String| -> std::io::Result<()> {
        let mut roff = Vec::new();
        // The page is named likewise-serve(1), its synopsis says `likewise serve`.
        let bin = name.replacen('-', " ", 1);
        clap_mangen::Man::new(cmd.name(name.clone()).bin_name(bin)).render(&mut roff)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, roff)?;
        written.push(path);
        Ok(())
    };
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("likewise-{}", sub.get_name());
        page(sub.clone(), name)?;
    }
    let visible: Vec<String> = root
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut top = root.clone();
    for name in visible {
        top = top.mut_subcommand(name, |s| s.hide(true));
    }
    page(top, "likewise".to_owned())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_help_names_the_secret_environment_variables() {
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        assert!(help.contains("LIKEWISE_ADMIN_TOKEN"), "{help}");
        assert!(help.contains("LIKEWISE_RESP_PASSWORD"), "{help}");
        assert!(help.contains("LIKEWISE_DURABILITY"), "{help}");
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_man_pages(dir.path()).expect("pages");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "likewise-serve.1",
                "likewise-edge.1",
                "likewise-backup.1",
                "likewise-restore.1",
                "likewise-admin-token.1",
                "likewise.1"
            ]
        );
        let serve = std::fs::read_to_string(dir.path().join("likewise-serve.1")).unwrap();
        assert!(serve.contains("LIKEWISE_ADMIN_TOKEN"));
        assert!(serve.contains("LIKEWISE_CLUSTER_REDIS"));
        assert!(serve.starts_with(".ie") || serve.contains(".TH"));
        let top = std::fs::read_to_string(dir.path().join("likewise.1")).unwrap();
        assert!(
            !top.contains("likewise\\-man"),
            "hidden subcommand listed: {top}"
        );
    }
}

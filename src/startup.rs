//! Building and running the whole server: open the store, recover the queue, bind
//! the listeners (port 0 picks a free port, and the chosen addresses are logged as
//! `listening http=ADDR` / `listening resp=ADDR`), serve until the shutdown token
//! fires, then drain in order — stop accepting, finish or release running tasks,
//! write pending views, commit and flush the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::control::ControlSocket;
use crate::domain::{AdminToken, Social};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::queue::{Beat, ScheduleSettings, WorkerPool};
use crate::store::Store;

/// How long running tasks get to finish at shutdown before they are put back.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// A built, bound, not yet running server.
pub struct Application {
    http_listener: TcpListener,
    http_addr: SocketAddr,
    resp: Option<crate::resp::Listener>,
    state: AppState,
    beat: Beat,
    control: Option<ControlSocket>,
}

/// Built-in maintenance: forget expired results every minute, unless the config
/// schedules that task itself.
fn schedules_with_builtins(
    configured: &[ScheduleSettings],
    offline_sweep_s: Option<u64>,
) -> Vec<ScheduleSettings> {
    let mut all = configured.to_vec();
    if let Some(every_s) = offline_sweep_s {
        if !all
            .iter()
            .any(|s| s.task == crate::tasks::SWEEP_UNDELIVERED)
        {
            all.push(ScheduleSettings {
                task: crate::tasks::SWEEP_UNDELIVERED.to_owned(),
                every_s,
            });
        }
    }
    if !all
        .iter()
        .any(|s| s.task == crate::tasks::PURGE_EXPIRED_RESULTS)
    {
        all.push(ScheduleSettings {
            task: crate::tasks::PURGE_EXPIRED_RESULTS.to_owned(),
            every_s: 60,
        });
    }
    all
}

/// Creates the data directory (and missing parents) readable by this user only:
/// it holds password hashes and private messages. An existing directory is left as
/// it is, with a warning if other users may read it.
fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("reading data directory {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the data directory {} has mode {:o}: other users may read it; chmod 700 it",
                dir.display(),
                mode & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    Ok(())
}

/// A start-up failure to bind `addr`, in one line that says what to do.
fn bind_error(what: &str, addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let (flag, hint) = match what {
        "RESP" => (
            "--resp ADDR (LIKEWISE_RESP), or turn it off with --resp off",
            " (a redis-server, perhaps: 6379 is Redis's port too)",
        ),
        _ => ("--http ADDR (LIKEWISE_HTTP)", ""),
    };
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("the address is already in use{hint}"),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_owned()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address".to_owned()
        }
        _ => e.to_string(),
    };
    anyhow::anyhow!("cannot listen for {what} on {addr}: {why}; choose another address with {flag}")
}

impl Application {
    /// Opens the store in `settings.data`, recovers interrupted tasks and binds the
    /// listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        // Webhooks over https use rustls with the ring provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        create_data_dir(&settings.data)?;
        let data = settings.data.clone();
        let store_settings = settings.store();
        let dir = settings.data.display().to_string();
        let store = tokio::task::spawn_blocking(move || Store::open_with(&data, &store_settings))
            .await?
            .map_err(|e| match e {
                crate::store::Error::InUse => anyhow::anyhow!(
                    "the data directory {dir} is in use by another likewise process (only one \
                     may use it at a time); stop that one, or choose another directory with \
                     --data"
                ),
                e => anyhow::anyhow!("cannot open the store in {dir}: {e}"),
            })?;
        // After the store is open: sled's lock means no other server owns this socket.
        let control = match ControlSocket::bind(&settings.data) {
            Ok(control) => Some(control),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot bind the control socket in {}; online backups are unavailable",
                    settings.data.display()
                );
                None
            }
        };

        // Every listener is bound before anything is generated or announced: a start
        // that fails here has printed no admin token and no `listening` line.
        let hub = Hub::with_limits(crate::hub::OutputLimits::from(&settings.limits));
        // Tapped before anything publishes; it connects once the server runs.
        let cluster = match settings.cluster.redis {
            Some(_) => Some(crate::cluster::Bus::new(
                &settings.cluster,
                hub.clone(),
                crate::resp::bridge::Bounds {
                    max_rooms: settings.limits.resp_bridge_max_rooms,
                    max_room_bytes: settings.limits.resp_max_channel_bytes,
                },
            )?),
            None => None,
        };
        let http_listener = TcpListener::bind(settings.http)
            .await
            .map_err(|e| bind_error("HTTP", settings.http, &e))?;
        let http_addr = http_listener.local_addr()?;
        let resp = match settings.resp {
            Some(addr) => Some(
                crate::resp::Listener::bind(
                    addr,
                    hub.clone(),
                    settings.resp_password.clone(),
                    (&settings.limits).into(),
                )
                .await
                .map_err(|e| bind_error("RESP", addr, &e))?,
            ),
            None => None,
        };

        let social = Social::new(
            store.clone(),
            (&settings.limits).into(),
            settings.queue.clone(),
            settings.webhooks.clone(),
            settings.accounts.clone(),
        );
        // Started before the event sink, which reports every push to it.
        let offline = {
            let hub = hub.clone();
            let connected: crate::domain::effects::Connected =
                Arc::new(move |user| hub.room_size(&crate::rooms::user(user)) > 0);
            social
                .start_offline_fallback(connected, settings.offline_after_s)
                .await?
        };
        social.set_event_sink(crate::tasks::event_sink(&social, &hub));
        let registry = crate::tasks::registry(&social, &settings)?;
        let pool = WorkerPool::new(
            store.clone(),
            registry,
            settings.workers,
            settings.queue.clone(),
        );
        pool.recover().await?;
        let demo_accounts = if settings.demo {
            crate::demo::seed_and_announce(&social).await
        } else {
            Vec::new()
        };
        let beat = Beat::new(
            store.clone(),
            &schedules_with_builtins(
                &settings.schedules,
                offline.then(|| {
                    crate::domain::offline::Offline::sweep_every_s(settings.offline_after_s)
                }),
            ),
            crate::tasks::PERIODIC,
            settings.queue.max_attempts,
        )
        .map_err(anyhow::Error::msg)?;

        // Last of all: nothing after this can fail, so a generated token is printed
        // by a server that goes on to run.
        let (admin, generated) =
            AdminToken::load_or_create(&store, settings.admin_token.as_deref())?;
        store.flush().await?;
        if let Some(token) = generated {
            // Printed once: only its hash is kept.
            tracing::warn!(
                "generated the admin token (shown only this once; set LIKEWISE_ADMIN_TOKEN to choose your own, or replace it with `likewise admin-token --rotate`): {token}"
            );
        }
        tracing::info!("listening http={http_addr}");
        if let Some(listener) = &resp {
            tracing::info!("listening resp={}", listener.local_addr());
        }

        let connections = Arc::<http::listener::ConnectionStats>::default();
        let admission = http::listener::admission(&settings.limits, connections.clone());
        let realtime = Arc::<http::realtime::RealtimeStats>::default();
        let polling = Arc::<http::realtime::PollingSessions>::default();
        let live = http::realtime::RealtimeState {
            backend: Arc::new(http::realtime::Local::new(social.clone(), admin.clone())),
            hub: hub.clone(),
            limits: Arc::new(settings.limits.clone()),
            allowed_origins: Arc::new(settings.allowed_origins.clone()),
            admission: admission.clone(),
            stats: realtime.clone(),
            polling: polling.clone(),
        };
        let state = AppState {
            social,
            queue: pool,
            hub,
            admin,
            settings: Arc::new(settings),
            metrics: crate::telemetry::metrics_handle(),
            started: std::time::Instant::now(),
            connections,
            admission,
            realtime,
            polling,
            demo_accounts: Arc::new(demo_accounts),
            cluster,
            live,
        };
        Ok(Application {
            http_listener,
            http_addr,
            resp,
            state,
            beat,
            control,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound RESP address; `None` when RESP is `off`.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        self.resp.as_ref().map(crate::resp::Listener::local_addr)
    }

    /// Shared state (the store, the queue, the settings).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains and flushes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            http_listener,
            resp,
            state,
            beat,
            control,
            ..
        } = self;
        let social = state.social.clone();
        let pool = state.queue.clone();
        let hub = state.hub.clone();
        {
            // Realtime sessions end (with a close frame) as soon as shutdown starts;
            // axum's graceful shutdown waits for them.
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                hub.close();
            });
        }
        let resp = resp.map(|listener| tokio::spawn(listener.run(shutdown.clone())));
        let bus_tasks = tokio_util::task::TaskTracker::new();
        if let Some(bus) = &state.cluster {
            // The primary's publications carry the stored notifications: when
            // some are lost, the edges are told, and replay them to their clients.
            bus.announce_gaps();
            bus.start(shutdown.clone(), &bus_tasks);
        }
        bus_tasks.close();
        let dispatcher = pool.start();
        let beat = tokio::spawn(beat.run(shutdown.clone()));
        let control = control.map(|c| {
            tokio::spawn(c.serve(
                social.store().clone(),
                state.admin.clone(),
                shutdown.clone(),
            ))
        });

        let views = {
            let social = social.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(e) = social.flush_views().await {
                                tracing::warn!(error = %e, "writing views failed; will retry");
                            }
                        }
                        _ = shutdown.cancelled() => return,
                    }
                }
            })
        };

        let limits = state.settings.limits.clone();
        let connections = state.connections.clone();
        let admission = state.admission.clone();
        let app = http::router(state);
        http::listener::serve(
            http_listener,
            app,
            &limits,
            admission,
            connections,
            shutdown.clone(),
        )
        .await;
        if let Some(resp) = resp {
            let _ = resp.await;
        }
        tracing::info!("shutting down: draining tasks");

        pool.shutdown(DRAIN_GRACE).await;
        let _ = dispatcher.await;
        let _ = views.await;
        let _ = beat.await;
        if let Some(control) = control {
            let _ = control.await;
        }
        bus_tasks.wait().await;
        if let Err(e) = social.flush_views().await {
            tracing::warn!(error = %e, "writing the last views failed");
        }
        if let Err(e) = social.persist_undelivered().await {
            tracing::warn!(error = %e, "storing which notifications were undelivered failed");
        }
        let store = social.store().clone();
        tokio::task::spawn_blocking(move || store.shut_down())
            .await?
            .context(
                "the final flush failed, so changes committed since the last successful one may be lost",
            )?;
        tracing::info!("stopped");
        Ok(())
    }
}

//! The one place that names concrete adapters and wires them together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::cache::{MemoryStore, RedisStore};
use crate::config::Settings;
use crate::crypto::hasher::HasherSettings;
use crate::crypto::keys::{KeyEncryption, generate_encryption_key};
use crate::crypto::{PasswordHasher, tokens};
use crate::domain::PasswordPolicy;
use crate::domain::password::CommonPasswords;
use crate::http::{self, AppState, AppStateInner, CookieNames};
use crate::idm::ports::{Clock, Counters, Directory, Ephemeral, MailTransport, SessionStore};
use crate::idm::{Idm, Rules};
use crate::mail::MailTarget;
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::store::SqlStore;
use crate::upstream::OpenIdUpstream;
use crate::worker::{self, RetryPolicy};

/// The bundled list of passwords refused as too common.
const COMMON_PASSWORDS: &str = include_str!("../config/common-passwords.txt");

/// Everything a running Latchkey holds, before it listens.
pub struct Components {
    pub idm: Idm,
    pub store: SqlStore,
    pub mail: Arc<MailTarget>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    /// The templates, compiled once: pages and mail share them.
    pub renderer: Renderer,
}

fn seconds(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Connects the database (and migrates it), the session store and mail.
pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Components> {
    let store =
        SqlStore::connect(&settings.database.url, settings.database.max_connections).await?;
    store.migrate().await?;

    let (sessions, counters, ephemeral): (
        Arc<dyn SessionStore>,
        Arc<dyn Counters>,
        Arc<dyn Ephemeral>,
    ) = if settings.redis.url.starts_with("redis+cluster://") {
        anyhow::bail!(
            "LATCHKEY_REDIS_URL: Redis Cluster (redis+cluster://) is not supported yet; \
             use a single Redis or a Sentinel-managed primary (redis://)"
        );
    } else if settings.redis.url.starts_with("memory://") {
        let memory = Arc::new(MemoryStore::new());
        (memory.clone(), memory.clone(), memory)
    } else {
        let redis = Arc::new(RedisStore::new(
            &settings.redis.url,
            &settings.redis.key_prefix,
            seconds(settings.session.absolute_timeout_seconds),
        )?);
        (redis.clone(), redis.clone(), redis)
    };
    let key_encryption = Arc::new(key_encryption(&settings, &store).await?);

    let p = &settings.password;
    let hasher = PasswordHasher::new(HasherSettings {
        memory_kib: p.argon2_memory_kib,
        iterations: p.argon2_iterations,
        parallelism: p.argon2_parallelism,
        concurrency: p.hash_concurrency,
        queue: p.hash_queue,
    })?;
    let policy = PasswordPolicy {
        require_composition: p.require_composition,
        min_length_temporary: p.min_length_temporary,
        min_length_chosen: p.min_length_chosen,
        max_length: p.max_length,
        common: CommonPasswords::from_list(COMMON_PASSWORDS),
    };
    let t = &settings.throttle;
    let rules = Rules {
        public_base: settings.public_base().to_owned(),
        session_idle_seconds: seconds(settings.session.idle_timeout_seconds),
        session_absolute_seconds: seconds(settings.session.absolute_timeout_seconds),
        temporary_valid_seconds: seconds(p.temporary_valid_hours.saturating_mul(3600)),
        reset_valid_seconds: seconds(settings.reset.token_valid_minutes.saturating_mul(60)),
        account_free_failures: t.account_free_failures,
        account_delay_initial_seconds: seconds(t.account_delay_initial_seconds),
        account_delay_max_seconds: seconds(t.account_delay_max_seconds),
        ip_max_failures: u64::from(t.ip_max_failures),
        ip_window_seconds: seconds(t.ip_window_seconds),
        reset_mails_per_address_per_hour: u64::from(t.reset_mails_per_address_per_hour),
        reset_mails_per_ip_per_hour: u64::from(t.reset_mails_per_ip_per_hour),
        access_token_seconds: seconds(settings.oidc.access_token_seconds),
        id_token_seconds: seconds(settings.oidc.id_token_seconds),
        refresh_token_seconds: seconds(settings.oidc.refresh_token_seconds),
        code_seconds: seconds(settings.oidc.code_seconds),
        key_activation_delay_seconds: seconds(settings.oidc.key_activation_delay_seconds),
        allow_http_loopback_issuers: settings.sso.allow_http_loopback_issuers,
    };
    let mail = Arc::new(MailTarget::from_settings(
        &settings.mail.smtp_url,
        &settings.mail.from,
    )?);
    let store_arc = Arc::new(store.clone());
    let renderer = Renderer::new()?;
    let idm = Idm {
        directory: store_arc.clone(),
        audit: store_arc.clone(),
        mail_queue: store_arc.clone(),
        clients: store_arc.clone(),
        signing_keys: store_arc.clone(),
        consents: store_arc.clone(),
        sso: store_arc,
        upstream: Arc::new(
            OpenIdUpstream::new(Duration::from_millis(
                settings.sso.upstream_timeout_ms.max(100),
            ))
            .map_err(|e| anyhow::anyhow!("upstream HTTP client: {e}"))?,
        ),
        ephemeral,
        key_encryption,
        key_cache: Arc::default(),
        composer: Arc::new(renderer.clone()),
        sessions,
        counters,
        hasher,
        policy,
        rules,
        mail_ready: Arc::new(Notify::new()),
    };
    idm.ensure_signing_keys(clock.now()).await?;
    Ok(Components {
        idm,
        store,
        mail,
        settings,
        clock,
        renderer,
    })
}

/// The key that seals signing keys: from the environment, or (development only) one
/// generated and kept in the database beside the keys it protects.
async fn key_encryption(settings: &Settings, store: &SqlStore) -> anyhow::Result<KeyEncryption> {
    let configured = settings.oidc.key_encryption_key.expose();
    if !configured.is_empty() {
        return Ok(KeyEncryption::from_base64(configured)?);
    }
    tracing::warn!(
        "LATCHKEY_OIDC_KEY_ENCRYPTION_KEY is not set: signing keys are sealed with a generated key \
         stored in the same database (development only)"
    );
    let stored = store
        .instance_secret("key_encryption_key", &generate_encryption_key())
        .await?;
    Ok(KeyEncryption::from_base64(&stored)?)
}

/// A Latchkey that is listening; dropping it does not stop it, `shutdown` does.
pub struct Application {
    pub address: SocketAddr,
    pub idm: Idm,
    pub settings: Settings,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Binds the configured address and starts serving and the mail worker.
    pub async fn start(components: Components) -> anyhow::Result<Self> {
        let Components {
            idm,
            store: _,
            mail,
            settings,
            clock,
            renderer,
        } = components;
        let csrf_key = idm
            .directory
            .instance_secret("csrf_hmac_key", &tokens::random_token(32))
            .await?;
        let https = settings.is_https();
        let dev_outbox = mail.outbox_folder().map(std::path::Path::to_path_buf);
        // The banner says mail goes to the outbox, so it shows exactly then.
        let dev_mode = dev_outbox.is_some();
        let state = AppState(Arc::new(AppStateInner {
            idm: idm.clone(),
            renderer,
            clock: clock.clone(),
            cookies: CookieNames::new(https),
            csrf_key: csrf_key.into_bytes(),
            https,
            trust_forwarded_for: settings.server.trust_forwarded_for,
            dev_outbox,
            dev_mode,
            metrics: Arc::new(Metrics::default()),
        }));
        let router = http::router(state, settings.server.max_body_bytes);

        let listener = TcpListener::bind(&settings.server.bind)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {} (server.bind, LATCHKEY_BIND): {e}",
                    settings.server.bind
                )
            })?;
        let address = listener.local_addr()?;
        let (shutdown, mut stop_server) = watch::channel(false);
        let server = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_server.changed().await;
            })
            .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "server stopped");
            }
        });
        let m = &settings.mail;
        let retry = RetryPolicy {
            poll_interval: Duration::from_millis(m.poll_interval_ms.max(10)),
            initial: Duration::from_millis(m.retry_initial_ms),
            max: Duration::from_millis(m.retry_max_ms.max(m.retry_initial_ms)),
        };
        let transport: Arc<dyn MailTransport> = mail;
        let worker = tokio::spawn(worker::run_mail_worker(
            idm.mail_queue.clone(),
            transport,
            clock,
            retry,
            idm.mail_ready.clone(),
            shutdown.subscribe(),
        ));
        tracing::info!(address = %address, public_url = %settings.server.public_url, "listening");
        Ok(Self {
            address,
            idm,
            settings,
            shutdown,
            server,
            worker,
        })
    }

    /// Serves until Ctrl-C or SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
        Ok(())
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.worker.await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

//! Typed configuration from the environment (and the matching flags).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL to use. Without it, Lectern starts and owns a private
    /// cluster under the data directory, from the system's PostgreSQL binaries.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Where the embedded cluster and development secrets live.
    #[arg(
        long,
        env = "LECTERN_DATA_DIR",
        default_value = "./.lectern",
        global = true
    )]
    pub data_dir: PathBuf,

    /// A hot-standby replica of the database (PostgreSQL streaming
    /// replication) to serve read-model queries from. Commands, the log,
    /// projections and process managers stay on the primary.
    #[arg(
        long,
        env = "LECTERN_READ_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub read_database_url: Option<String>,

    /// Connections in the pool.
    #[arg(
        long,
        env = "LECTERN_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub pool_size: u32,
}

/// The HTTP listeners: the public API and the metrics endpoint.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address to listen on.
    #[arg(long, env = "LECTERN_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Address of the Prometheus metrics listener (`GET /metrics`), kept off
    /// the public API port.
    #[arg(long, env = "LECTERN_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LECTERN_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,

    /// Requests running longer than this are abandoned with 408.
    #[arg(long, env = "LECTERN_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Exact origins allowed by CORS, comma-separated. Empty: CORS off.
    #[arg(
        long,
        env = "LECTERN_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,

    /// Open client connections at most; further clients wait to be
    /// accepted until one closes.
    #[arg(long, env = "LECTERN_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// A client has this many seconds to send a request's headers; a slower
    /// one (a slowloris) is disconnected.
    #[arg(long, env = "LECTERN_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// /health/ready fails when a projection is more events behind than this.
    #[arg(long, env = "LECTERN_READY_MAX_LAG", default_value_t = 10_000)]
    pub ready_max_lag: i64,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose
    /// `X-Forwarded-For` names the client, for per-address rate limits and
    /// event metadata. Empty: the connection's address is the client's.
    #[arg(long, env = "LECTERN_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::auth::TrustedProxies,

    /// The default rate limits.
    #[command(flatten)]
    pub throttle: ThrottleConfig,

    /// The realtime socket's limits.
    #[command(flatten)]
    pub realtime: RealtimeConfig,

    /// Stripe.
    #[command(flatten)]
    pub billing: BillingConfig,
}

/// Stripe: the webhook endpoint's signing secrets.
#[derive(Debug, Clone, Args)]
pub struct BillingConfig {
    /// The webhook endpoint's signing secrets (`whsec_…`), comma-separated.
    /// A signature by any of them is accepted, so that during Stripe's
    /// 24-hour secret roll both the old and the new one verify. Empty: the
    /// webhook endpoint answers 503.
    #[arg(
        long,
        env = "LECTERN_STRIPE_WEBHOOK_SECRETS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub stripe_webhook_secrets: crate::routes::billing::signature::Secrets,

    /// How far a webhook's signed timestamp may be from now, in seconds,
    /// either way (Stripe's SDKs use 300 and check only the past).
    #[arg(
        long,
        env = "LECTERN_STRIPE_WEBHOOK_TOLERANCE_SECS",
        default_value_t = 300
    )]
    pub stripe_webhook_tolerance_secs: i64,

    /// The Stripe API's base URL (a local emulator's in tests).
    #[arg(
        long,
        env = "LECTERN_STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// The Stripe secret key (`sk_…`). Unset: starting a payment answers
    /// 503 `payments_not_configured`; everything else works.
    #[arg(long, env = "LECTERN_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<crate::routes::billing::stripe::SecretKey>,

    /// Invoices opened by an enrolment are due this many seconds before the
    /// lesson starts (0: at its start; negative: after it).
    #[arg(
        long,
        env = "LECTERN_INVOICE_DUE_BEFORE_START_SECS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub invoice_due_before_start_secs: i64,

    /// Seconds between two reconciliations against the Stripe API (one
    /// process runs each; only with a secret key). 0 turns it off.
    #[arg(long, env = "LECTERN_STRIPE_RECONCILE_SECS", default_value_t = 300)]
    pub stripe_reconcile_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            stripe_webhook_secrets: crate::routes::billing::signature::Secrets::default(),
            stripe_webhook_tolerance_secs: 300,
            stripe_api_base: "https://api.stripe.com".to_owned(),
            stripe_secret_key: None,
            stripe_reconcile_secs: 300,
            invoice_due_before_start_secs: 0,
        }
    }
}

/// The rate limits of every endpoint without a limit of its own (the
/// policy table's limits, such as 10 payment starts a minute, stay as they
/// are). Each is per process; 0 turns one off.
#[derive(Debug, Clone, Copy, Args)]
pub struct ThrottleConfig {
    /// Requests a minute one user may make (the burst).
    #[arg(long, env = "LECTERN_RATE_LIMIT_BURST_PER_MINUTE", default_value_t = crate::auth::limits::DefaultLimits::default().burst_per_minute)]
    pub burst_per_minute: u32,
    /// Requests an hour one user may make (the sustained rate).
    #[arg(long, env = "LECTERN_RATE_LIMIT_PER_HOUR", default_value_t = crate::auth::limits::DefaultLimits::default().per_hour)]
    pub per_hour: u32,
    /// Requests an hour one client address may make without a token, on
    /// anything but the auth endpoints, webhooks, the realtime socket, the
    /// health probes and the docs.
    #[arg(long, env = "LECTERN_RATE_LIMIT_ANONYMOUS_PER_HOUR", default_value_t = crate::auth::limits::DefaultLimits::default().anonymous_per_hour)]
    pub anonymous_per_hour: u32,
}

impl Default for ThrottleConfig {
    /// The production defaults, as the flags' defaults.
    fn default() -> Self {
        let d = crate::auth::limits::DefaultLimits::default();
        Self {
            burst_per_minute: d.burst_per_minute,
            per_hour: d.per_hour,
            anonymous_per_hour: d.anonymous_per_hour,
        }
    }
}

impl ThrottleConfig {
    /// The limits these settings name.
    pub fn limits(self) -> crate::auth::limits::DefaultLimits {
        crate::auth::limits::DefaultLimits {
            burst_per_minute: self.burst_per_minute,
            per_hour: self.per_hour,
            anonymous_per_hour: self.anonymous_per_hour,
        }
    }
}

/// The realtime socket (`GET /api/v1/realtime`): its deadlines and limits.
/// `docs/realtime.md` explains each.
#[derive(Debug, Clone, Args)]
pub struct RealtimeConfig {
    /// Seconds a new socket has to send its `connect` frame.
    #[arg(long, env = "LECTERN_WS_AUTH_TIMEOUT_SECS", default_value_t = 15)]
    pub auth_timeout_secs: u64,
    /// The socket's read buffer, in bytes (axum's default is 128 KiB).
    #[arg(long, env = "LECTERN_WS_READ_BUFFER_BYTES", default_value_t = 8 * 1024)]
    pub read_buffer_bytes: usize,
    /// The largest frame (and message) a client may send, in bytes.
    #[arg(long, env = "LECTERN_WS_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames queued for one socket at most; past that it is closed as slow (4008).
    /// One op is one frame: a busy board sends thousands a second, and the
    /// log's tailer hands a socket each read's events at once, so this is
    /// set high enough that the byte limit is usually the one reached.
    #[arg(long, env = "LECTERN_WS_OUTBOUND_FRAMES", default_value_t = 4096)]
    pub outbound_frames: usize,
    /// Bytes queued for one socket at most; past that it is closed as slow (4008).
    #[arg(long, env = "LECTERN_WS_OUTBOUND_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_bytes: usize,
    /// A write that takes longer than this many seconds closes the socket as slow (4008).
    #[arg(long, env = "LECTERN_WS_WRITE_TIMEOUT_SECS", default_value_t = 2)]
    pub write_timeout_secs: u64,
    /// Channels one socket may subscribe to.
    #[arg(long, env = "LECTERN_WS_MAX_CHANNELS", default_value_t = 128)]
    pub max_channels: usize,
    /// Sockets one user may hold open on one process.
    #[arg(
        long,
        env = "LECTERN_WS_MAX_CONNECTIONS_PER_USER",
        default_value_t = 10
    )]
    pub max_connections_per_user: usize,
    /// Seconds between the server's pings.
    #[arg(long, env = "LECTERN_WS_PING_SECS", default_value_t = 25)]
    pub ping_secs: u64,
    /// Seconds a client has to answer a ping; else it is closed (4009).
    #[arg(long, env = "LECTERN_WS_PONG_TIMEOUT_SECS", default_value_t = 10)]
    pub pong_timeout_secs: u64,
    /// A resume recovers at most this many missed events ...
    #[arg(long, env = "LECTERN_WS_RESUME_MAX_EVENTS", default_value_t = 1000)]
    pub resume_max_events: u64,
    /// ... and at most this many bytes of them; else `recovered: false`.
    #[arg(long, env = "LECTERN_WS_RESUME_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub resume_max_bytes: usize,
    /// Frames a client may send per second, counted over two-second
    /// windows; past that the socket is closed (4429). Commands are also held to their
    /// policy rate limits, as over HTTP.
    #[arg(long, env = "LECTERN_WS_FRAMES_PER_SEC", default_value_t = 100)]
    pub frames_per_sec: u32,
    /// Milliseconds between two cursor frames a socket relays; faster ones
    /// are dropped.
    #[arg(long, env = "LECTERN_WS_CURSOR_INTERVAL_MS", default_value_t = 50)]
    pub cursor_interval_ms: u64,
    /// Milliseconds between two delivery-acknowledgement events of one
    /// recipient in one chat: acks in between are merged.
    #[arg(long, env = "LECTERN_WS_ACK_INTERVAL_MS", default_value_t = 1000)]
    pub ack_interval_ms: u64,
    /// An HTTP presence client without a heartbeat for this long shows
    /// `reconnecting` (PRESENCE_TTL).
    #[arg(long, env = "LECTERN_PRESENCE_TTL_SECS", default_value_t = 90)]
    pub presence_ttl_secs: u64,
    /// The heartbeat interval HTTP presence clients are told to keep.
    #[arg(long, env = "LECTERN_PRESENCE_HEARTBEAT_SECS", default_value_t = 30)]
    pub presence_heartbeat_secs: u64,
    /// An HTTP presence client without a heartbeat for this long is dropped
    /// (a ghost): `offline`.
    #[arg(long, env = "LECTERN_PRESENCE_GHOST_SECS", default_value_t = 120)]
    pub presence_ghost_secs: u64,
    /// A status the user chose (away, busy) is restored on a reconnect
    /// within this many seconds.
    #[arg(
        long,
        env = "LECTERN_PRESENCE_RECONNECT_WINDOW_SECS",
        default_value_t = 300
    )]
    pub presence_reconnect_window_secs: u64,
    /// A socket lost without a close shows `reconnecting` this long, then
    /// `offline`; a reconnect within it sends no offline diff.
    #[arg(long, env = "LECTERN_PRESENCE_GRACE_SECS", default_value_t = 30)]
    pub presence_grace_secs: u64,
    /// Presence diffs to a `lesson:` channel are sent at most this often.
    #[arg(long, env = "LECTERN_PRESENCE_BATCH_MS", default_value_t = 1500)]
    pub presence_batch_ms: u64,
    /// Each process beats its `realtime_nodes` row this often ...
    #[arg(long, env = "LECTERN_NODE_BEAT_SECS", default_value_t = 5)]
    pub node_beat_secs: u64,
    /// ... is suspect after this long without a beat (its users show
    /// `reconnecting`) ...
    #[arg(long, env = "LECTERN_NODE_SUSPECT_SECS", default_value_t = 10)]
    pub node_suspect_secs: u64,
    /// ... and dead after this long (its users go `offline`).
    #[arg(long, env = "LECTERN_NODE_DEAD_SECS", default_value_t = 15)]
    pub node_dead_secs: u64,
    /// A second device starting a video: `refuse` (409
    /// playback_active_elsewhere) or `takeover` (the old one is stopped).
    #[arg(long, env = "LECTERN_VIDEO_POLICY", default_value = "refuse", value_parser = ["refuse", "takeover"])]
    pub video_policy: String,
    /// A video session lives this long past its last heartbeat.
    #[arg(long, env = "LECTERN_VIDEO_LEASE_SECS", default_value_t = 45)]
    pub video_lease_secs: u64,
    /// Where playback URLs point (the media server or CDN).
    #[arg(
        long,
        env = "LECTERN_VIDEO_BASE_URL",
        default_value = "http://127.0.0.1:8080/media"
    )]
    pub video_base_url: String,
    /// Playback URLs and session tokens expire after this many seconds.
    #[arg(long, env = "LECTERN_VIDEO_URL_TTL_SECS", default_value_t = 3600)]
    pub video_url_ttl_secs: u64,
}

impl RealtimeConfig {
    /// The presence timings.
    pub fn presence(&self) -> lectern_commands::presence::PresenceConfig {
        use std::time::Duration;
        lectern_commands::presence::PresenceConfig {
            ttl: Duration::from_secs(self.presence_ttl_secs),
            heartbeat_interval: Duration::from_secs(self.presence_heartbeat_secs),
            ghost: Duration::from_secs(self.presence_ghost_secs),
            reconnect_window: Duration::from_secs(self.presence_reconnect_window_secs),
            grace: Duration::from_secs(self.presence_grace_secs),
            node_beat: Duration::from_secs(self.node_beat_secs.max(1)),
            node_suspect: Duration::from_secs(self.node_suspect_secs),
            node_dead: Duration::from_secs(self.node_dead_secs),
        }
    }

    /// The video settings.
    pub fn video(&self) -> lectern_commands::video::VideoConfig {
        use lectern_domain::video::TakeoverPolicy;
        lectern_commands::video::VideoConfig {
            lease: std::time::Duration::from_secs(self.video_lease_secs),
            policy: if self.video_policy == "takeover" {
                TakeoverPolicy::Takeover
            } else {
                TakeoverPolicy::Refuse
            },
        }
    }
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            auth_timeout_secs: 15,
            read_buffer_bytes: 8 * 1024,
            max_frame_bytes: 64 * 1024,
            outbound_frames: 4096,
            outbound_bytes: 1024 * 1024,
            write_timeout_secs: 2,
            max_channels: 128,
            max_connections_per_user: 10,
            ping_secs: 25,
            pong_timeout_secs: 10,
            resume_max_events: 1000,
            resume_max_bytes: 1024 * 1024,
            frames_per_sec: 100,
            cursor_interval_ms: 50,
            ack_interval_ms: 1000,
            presence_ttl_secs: 90,
            presence_heartbeat_secs: 30,
            presence_ghost_secs: 120,
            presence_reconnect_window_secs: 300,
            presence_grace_secs: 30,
            presence_batch_ms: 1500,
            node_beat_secs: 5,
            node_suspect_secs: 10,
            node_dead_secs: 15,
            video_policy: "refuse".to_owned(),
            video_lease_secs: 45,
            video_base_url: "http://127.0.0.1:8080/media".to_owned(),
            video_url_ttl_secs: 3600,
        }
    }
}

/// The Stripe webhook secret of [`HttpConfig::for_tests`]: tests sign with
/// it. Never a server's default.
pub const TEST_WEBHOOK_SECRET: &str = "whsec_lectern_tests";

impl HttpConfig {
    /// Settings for tests: port 0 on loopback and the defaults otherwise.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_body_bytes: 1_048_576,
            request_timeout_secs: 30,
            max_connections: 1024,
            header_read_timeout_secs: 2,
            cors_origins: Vec::new(),
            ready_max_lag: 10_000,
            trusted_proxies: crate::auth::TrustedProxies::default(),
            // Off: tests poll and page far faster than any client. The
            // throttle tests turn the production defaults back on.
            throttle: ThrottleConfig {
                burst_per_minute: 0,
                per_hour: 0,
                anonymous_per_hour: 0,
            },
            realtime: RealtimeConfig::default(),
            billing: BillingConfig {
                stripe_webhook_secrets: TEST_WEBHOOK_SECRET.parse().unwrap_or_default(),
                ..BillingConfig::default()
            },
        }
    }
}

/// The background work a server process runs beside its listeners.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Deliver queued mail (password resets) as files into this directory.
    /// Unset: mail stays in `outbound_messages` for an external relay.
    #[arg(long, env = "LECTERN_MAIL_DIR")]
    pub mail_dir: Option<std::path::PathBuf>,

    /// Chat deliveries nobody acknowledged expire after this many seconds
    /// (default 7 days); a background worker records each expiry.
    #[arg(long, env = "LECTERN_DELIVERY_TTL_SECS", default_value_t = 604_800)]
    pub delivery_ttl_secs: u64,

    /// Run projection workers and process managers in this process. Every
    /// process may: one of them holds each at a time, the others stand by.
    #[arg(long, env = "LECTERN_RUN_PROJECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_projections: bool,

    /// The ledger's sealer (it runs where the projections run).
    #[command(flatten)]
    pub ledger: LedgerConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            mail_dir: None,
            delivery_ttl_secs: 604_800,
            run_projections: true,
            ledger: LedgerConfig::default(),
        }
    }
}

/// The verifiable ledger: its signing key, where checkpoints are published,
/// and how often they are signed (docs/audit.md).
#[derive(Debug, Clone, Args)]
pub struct LedgerConfig {
    /// The Ed25519 key that signs checkpoints, as
    /// `PRIVATE+KEY+<origin>+<id>+<base64>` (`lectern audit keygen` prints
    /// one). Unset: the key in `<data dir>/ledger-key`, generated on first
    /// use (for development).
    #[arg(long, env = "LECTERN_LEDGER_KEY", hide_env_values = true)]
    pub ledger_key: Option<String>,

    /// The log's origin (the name in its checkpoints) when a development key
    /// is generated.
    #[arg(
        long,
        env = "LECTERN_LEDGER_ORIGIN",
        default_value = "lectern.localhost/ledger"
    )]
    pub ledger_origin: String,

    /// Where every signed checkpoint is also written, outside the database
    /// (point it at a write-once bucket's mount or a git work tree), with the
    /// public key. Unset: `<data dir>/ledger`.
    #[arg(long, env = "LECTERN_LEDGER_PUBLISH_DIR")]
    pub ledger_publish_dir: Option<std::path::PathBuf>,

    /// Sign a checkpoint this often, in seconds, when the log grew.
    #[arg(long, env = "LECTERN_LEDGER_CHECKPOINT_SECS", default_value_t = 30)]
    pub ledger_checkpoint_secs: u64,

    /// Sign one as soon as this many events were sealed since the last.
    #[arg(
        long,
        env = "LECTERN_LEDGER_CHECKPOINT_EVENTS",
        default_value_t = 100_000
    )]
    pub ledger_checkpoint_events: u64,

    /// Run the sealer in this process (when projections run here). One
    /// process in the cluster seals at a time; the others stand by.
    #[arg(long, env = "LECTERN_RUN_LEDGER", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_ledger: bool,

    /// The development key's file; set by `serve` from the data directory.
    /// Without it (and without a key), a process signs with a key of its
    /// own that lives as long as it does (tests).
    #[arg(skip)]
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            ledger_key: None,
            ledger_origin: "lectern.localhost/ledger".to_owned(),
            ledger_publish_dir: None,
            ledger_checkpoint_secs: 30,
            ledger_checkpoint_events: 100_000,
            run_ledger: true,
            key_file: None,
        }
    }
}

impl LedgerConfig {
    /// Fill in what depends on the data directory: the development key's
    /// file and the publish directory.
    pub fn in_data_dir(mut self, data_dir: &std::path::Path) -> Self {
        self.key_file
            .get_or_insert_with(|| data_dir.join("ledger-key"));
        self.ledger_publish_dir
            .get_or_insert_with(|| data_dir.join("ledger"));
        self
    }

    /// The signing key: `LECTERN_LEDGER_KEY`, else the development key file
    /// (created on first use), else a key for this process only.
    pub fn key(&self) -> anyhow::Result<lectern_ledger::LedgerKey> {
        use anyhow::Context;
        use lectern_ledger::LedgerKey;
        if let Some(text) = self.ledger_key.as_deref().filter(|k| !k.trim().is_empty()) {
            return LedgerKey::parse(text).context("LECTERN_LEDGER_KEY");
        }
        let Some(path) = &self.key_file else {
            return LedgerKey::generate(&self.ledger_origin).context("LECTERN_LEDGER_ORIGIN");
        };
        if !path.exists() {
            let key = LedgerKey::generate(&self.ledger_origin).context("LECTERN_LEDGER_ORIGIN")?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Written whole to a file of its own, then linked into place
            // only if no key is there yet: of two processes starting on one
            // data directory, one key wins and both use it.
            let tmp = path.with_extension(format!("{:016x}.tmp", rand::random::<u64>()));
            crate::embedded::write_private(&tmp, key.private_text())?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "LECTERN_LEDGER_KEY is not set: generated a development ledger key");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot write {}", path.display()))
                }
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        LedgerKey::parse(&text).with_context(|| path.display().to_string())
    }
}

/// Access-token settings.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// JWT signing keys as `kid:hex-secret,kid:hex-secret` (each secret at
    /// least 32 bytes). The first signs; all verify, so a new key can take
    /// over while the old one's tokens expire. Unset: one key derived from the
    /// server's secret key.
    #[arg(long, env = "LECTERN_JWT_KEYS", hide_env_values = true)]
    pub jwt_keys: Option<String>,

    /// The `iss` of access tokens.
    #[arg(long, env = "LECTERN_JWT_ISSUER", default_value = "lectern")]
    pub jwt_issuer: String,

    /// The `aud` of access tokens.
    #[arg(long, env = "LECTERN_JWT_AUDIENCE", default_value = "lectern-api")]
    pub jwt_audience: String,
}

impl AuthConfig {
    /// The keyring these settings describe; `secret` backs the derived key.
    pub fn keyring(&self, secret: &[u8]) -> anyhow::Result<crate::auth::tokens::Keyring> {
        use crate::auth::tokens::Keyring;
        let keys = match &self.jwt_keys {
            Some(spec) if !spec.trim().is_empty() => Keyring::parse_keys(spec)?,
            _ => vec![Keyring::derived_key(secret)],
        };
        Keyring::new(keys, &self.jwt_issuer, &self.jwt_audience)
    }
}

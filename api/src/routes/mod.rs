//! The contexts the server is made of, wired here and only here: their
//! route groups (one directory per context, one route group per file), the
//! state their handlers share, their problem codes, and the process
//! managers and workers that run beside them.
//!
//! Adding a context touches this file once for each of those (see
//! `docs/ARCHITECTURE.md`, "Adding a context").

pub mod audit;
pub mod billing;
pub mod classroom;
pub mod health;
pub mod identity;
pub mod meta;
pub mod presence;
pub mod projections;
pub mod video;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lectern_commands::billing::enrolment::InvoiceOnEnrolment;
use lectern_commands::billing::BillingService;
use lectern_commands::classroom::roster::RosterSync;
use lectern_commands::classroom::ClassroomService;
use lectern_commands::identity::IdentityService;
use lectern_commands::presence::PresenceService;
use lectern_commands::video::VideoService;
use lectern_projections::ProcessManager;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::tokens::Keyring;
use crate::auth::Auth;
use crate::config::{HttpConfig, WorkerConfig};
use crate::problem::Code;

/// What every handler can reach: one `Arc`, so that the clone each request
/// takes is one reference count, not one per service and pool. Its fields
/// are [`Shared`]'s.
///
/// Building it starts nothing: the background work that keeps it current
/// (the revocation watcher, limiter pruning, projections, process managers,
/// the contexts' workers) is started by [`crate::workers::Workers`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The services, pools and settings behind an [`AppState`].
#[derive(Clone)]
pub struct Shared {
    /// The primary database: commands, the log, checkpoints, health.
    pub pool: PgPool,
    /// Where queries served from read models go: a hot-standby replica when
    /// `LECTERN_READ_DATABASE_URL` is set, else the primary.
    pub read_pool: PgPool,
    /// The HTTP settings.
    pub http: Arc<HttpConfig>,
    /// Token verification, revocations and rate limits.
    pub auth: Arc<Auth>,
    /// The identity context's commands.
    pub identity: IdentityService,
    /// The classroom context's commands.
    pub classroom: ClassroomService,
    /// The realtime gateway's sockets and subscriptions.
    pub realtime: Arc<crate::realtime::Hub>,
    /// The presence context's commands.
    pub presence: PresenceService,
    /// The video context's commands.
    pub video: VideoService,
    /// The billing context's commands.
    pub billing: BillingService,
    /// The Stripe API, when a secret key is configured.
    pub stripe: Option<billing::stripe::StripeClient>,
}

impl AppState {
    /// Serve read-model queries from `read_pool` (a streaming replica).
    pub fn with_read_pool(mut self, read_pool: PgPool) -> Self {
        Arc::make_mut(&mut self.0).read_pool = read_pool;
        self
    }

    /// The state over `pool`, which also serves the queries.
    pub fn new(pool: PgPool, http: HttpConfig, keyring: Keyring) -> Self {
        let auth = Arc::new(Auth::new(keyring, http.throttle.limits()));
        let seen = Arc::clone(&auth.revocations);
        let identity = IdentityService::new(pool.clone()).with_observer(Arc::new(
            move |user, version, event| seen.observe(user, version, event),
        ));
        Self(Arc::new(Shared {
            identity,
            classroom: ClassroomService::new(&pool),
            realtime: Arc::new(crate::realtime::Hub::new(http.realtime.clone())),
            presence: PresenceService::new(&pool, http.realtime.presence()),
            video: VideoService::new(&pool, http.realtime.video()),
            billing: BillingService::new(&pool),
            stripe: http
                .billing
                .stripe_secret_key
                .clone()
                .map(|key| billing::stripe::StripeClient::new(&http.billing.stripe_api_base, key)),
            read_pool: pool.clone(),
            pool,
            http: Arc::new(http),
            auth,
        }))
    }
}

/// Every context's routes, with the operational ones (health, OpenAPI,
/// projections, audit).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(meta::router())
        .merge(projections::router())
        .merge(audit::router())
        .merge(identity::router())
        .merge(classroom::router())
        .merge(crate::realtime::router())
        .merge(presence::router())
        .merge(video::router())
        .merge(billing::router())
}

/// Every problem code the API answers with.
pub fn problem_codes() -> impl Iterator<Item = Code> {
    [
        Code::GENERAL,
        Code::IDENTITY,
        Code::CLASSROOM,
        Code::REALTIME,
        Code::VIDEO,
        Code::BILLING,
        Code::AUDIT,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// Every process manager: follow-up commands to events of the log.
pub fn process_managers(state: &AppState) -> Vec<Arc<dyn ProcessManager>> {
    vec![
        Arc::new(RosterSync::new(state.classroom.clone())),
        Arc::new(
            InvoiceOnEnrolment::new(state.billing.clone(), state.classroom.clone())
                .due_before_start(state.http.billing.invoice_due_before_start_secs),
        ),
    ]
}

/// One run of a worker, until the token fires.
pub type WorkerRun =
    Box<dyn Fn(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A background task a context runs, started again by the supervisor if it
/// stops before shutdown.
pub struct ContextWorker {
    /// Its name in logs and `lectern_worker_restarts_total`.
    pub name: &'static str,
    /// Start one run of it.
    pub run: WorkerRun,
}

/// The contexts' background tasks.
pub fn context_workers(state: &AppState, config: &WorkerConfig) -> Vec<ContextWorker> {
    let (pool, classroom) = (state.pool.clone(), state.classroom.clone());
    let ttl = Duration::from_secs(config.delivery_ttl_secs);
    let (sweeping, expiring, billing) = (state.clone(), state.clone(), state.clone());
    let reconciling = state.clone();
    vec![
        ContextWorker {
            name: "billing_inbox",
            run: Box::new(move |cancel| Box::pin(billing::work(billing.clone(), cancel))),
        },
        ContextWorker {
            name: "billing_reconcile",
            run: Box::new(move |cancel| {
                Box::pin(billing::reconcile::work(reconciling.clone(), cancel))
            }),
        },
        ContextWorker {
            name: "presence_sweep",
            run: Box::new(move |cancel| Box::pin(presence::sweep(sweeping.clone(), cancel))),
        },
        ContextWorker {
            name: "video_expiry",
            run: Box::new(move |cancel| Box::pin(video::expire(expiring.clone(), cancel))),
        },
        ContextWorker {
            name: "delivery_expiry",
            run: Box::new(move |cancel| {
                Box::pin(crate::expiry::run(
                    pool.clone(),
                    classroom.clone(),
                    ttl,
                    cancel,
                ))
            }),
        },
    ]
}

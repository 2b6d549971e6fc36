//! `lectern-bench webhooks`: verified Stripe webhook ingestion over HTTP.
//!
//! A server in the benchmark's process (with its projection runners and the
//! Stripe inbox worker) receives `payment_intent.succeeded` events, each
//! signed as Stripe signs and each paying an open invoice of its own. The
//! invoices are opened through a billing service of their own, so the
//! server holds none of them in memory: each webhook's invoice is loaded from
//! the store, as it is when a payment comes long after the invoice was
//! opened or in another process. Four runs, each `--seconds` long, on the
//! same connections, each once the inbox, every projection and the ledger's
//! sealer have caught up with what came before, the tables are analyzed and
//! a `CHECKPOINT` has written it out, and each after `--warmup` seconds of
//! sending the same way that are not measured (the connections, threads and
//! statements the first requests set up, and the change from idle to load,
//! belong to a process's first second, not to its steady state; the open
//! loop's warm-up figures are reported beside):
//!
//! - **Lectern, open loop** (the target's measure): `--rate` webhooks/s
//!   (by default the target's 2,000) offered on a fixed schedule; a
//!   request's latency counts from its scheduled send time. Meanwhile a
//!   poller watches the `invoices` read model every 20 ms: the effect lag
//!   runs from a webhook's send until its invoice shows `paid`.
//! - **The limit, open loop**: the same requests at the same rate to a bare
//!   axum route that verifies the signature with the same code and answers
//!   200: no store, no inbox, no log.
//! - **Lectern, open loop beyond the target** (`--over-rate`, by default
//!   2,200/s, 10% over): the same, on invoices of its own, to show how much
//!   room the target's load leaves.
//! - **Lectern, closed loop** (capacity): each connection sends its next
//!   webhook as soon as the last is answered.
//!
//! Beside the open loop's figures it reports the p99 of each of its seconds
//! and, on Linux, the host's page-cache writeback bursts during it (the
//! kernel writing back PostgreSQL's data files, which holds up the WAL's
//! flushes on a shared disk: see docs/DEPLOYMENT.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Args;
use lectern_api::auth::tokens::Keyring;
use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::routes::billing::signature::{sign, verify, Secrets};
use lectern_api::workers::Workers;
use lectern_api::AppState;
use lectern_bench::stats::{percentile, round3, Stopwatch};
use lectern_commands::billing::BillingService;
use lectern_domain::billing::invoice::{InvoiceCommand, Line};
use lectern_domain::classroom::values::Currency;
use lectern_domain::EventMetadata;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classroom::serve;

/// The endpoint secret of the run.
const SECRET: &str = "whsec_lectern_bench";
/// The amount of every invoice and payment, in cents.
const AMOUNT: i64 = 1500;

/// Options of `lectern-bench webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksBench {
    /// Webhooks per second offered in the open loop that the target is
    /// measured on (and in the bare check): the target's own load.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// A second open loop, on invoices of its own, offering this many
    /// webhooks/s: how the p99 holds beyond the target's load (0: none).
    #[arg(long, default_value_t = 2200)]
    pub over_rate: u64,
    /// Seconds of each run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// HTTP connections (each sends on a schedule of its own).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds of sending before each run that are not measured (the run
    /// follows on the same connections without a pause).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Run the server without the ledger's sealer (to measure its share;
    /// `lectern serve` runs it by default, and so does this benchmark).
    #[arg(long)]
    pub without_ledger: bool,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Run {
    requests: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Answers other than 2xx.
    errors: usize,
}

/// What `lectern-bench webhooks` prints.
#[derive(Debug, Serialize)]
pub struct WebhooksResult {
    scenario: &'static str,
    seconds: u64,
    clients: usize,
    warmup_seconds: u64,
    /// The open loop at `--rate`, flattened: `rate`, `lectern`, `lectern_warmup`,
    /// `lectern_p99_by_second`, `writeback_bursts` and the `effect_*` lag.
    #[serde(flatten)]
    open: OpenLoop,
    /// The open loop at `--over-rate`, when it ran.
    over: Option<OpenLoop>,
    relay: Run,
    capacity: Run,
    p99_ratio: f64,
}

/// The figures of one open loop, its read model watched.
#[derive(Debug, Serialize)]
pub struct OpenLoop {
    rate: u64,
    lectern: Run,
    /// The open loop's warm-up, not measured in `lectern`.
    lectern_warmup: Run,
    /// The open loop's p99 (ms) of the requests scheduled in each second.
    lectern_p99_by_second: Vec<f64>,
    /// Page-cache writeback bursts during the open loop (Linux only; `None`
    /// where `/proc/meminfo` cannot be read).
    writeback_bursts: Option<Vec<Burst>>,
    /// Send → the invoice's read model shows it paid.
    effect_p50_ms: f64,
    effect_p99_ms: f64,
    effect_max_ms: f64,
    effects_seen: usize,
    effects_missing: usize,
    /// The host's CPU time the hypervisor gave to other guests during the
    /// open loop (its warm-up too), in percent (`None` where `/proc/stat`
    /// cannot say).
    cpu_stolen_pct: Option<f64>,
}

/// A drop of the host's dirty page cache (`Dirty` in `/proc/meminfo`) of at
/// least [`BURST_MB`] between two looks 50 ms apart: the kernel writing back
/// what PostgreSQL's data files accumulated (a table or index grows by
/// pages PostgreSQL 15 writes as zeros, later flushed all at once per file),
/// during which the WAL's flushes, and so every commit, wait for the disk.
#[derive(Debug, Serialize)]
pub struct Burst {
    /// Seconds into the measured run (negative: in the warm-up).
    at_s: f64,
    /// Megabytes written back.
    mb: f64,
}

/// The smallest drop counted as a burst.
const BURST_MB: f64 = 16.0;

/// The host's dirty page cache in MB, where it can be read.
fn dirty_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("Dirty:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Look at the dirty page cache every 50 ms until `done`: each burst, timed
/// from `measured`.
async fn watch_writeback(measured: Instant, done: CancellationToken) -> Option<Vec<Burst>> {
    let mut last = dirty_mb()?;
    let mut bursts = Vec::new();
    while !done.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = dirty_mb()?;
        if last - now >= BURST_MB {
            let at = Instant::now();
            let at_s = if at >= measured {
                at.duration_since(measured).as_secs_f64()
            } else {
                -measured.duration_since(at).as_secs_f64()
            };
            bursts.push(Burst {
                at_s: round3(at_s),
                mb: round3(last - now),
            });
        }
        last = now;
    }
    Some(bursts)
}

/// A signed delivery and the invoice it pays.
struct Delivery {
    body: Bytes,
    signature: String,
    invoice: Uuid,
}

fn deliveries(invoices: &[Uuid], n: usize, run: &str) -> Vec<Delivery> {
    let t = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| {
            let invoice = invoices[i % invoices.len()];
            let pi = format!("pi_{run}_{i}");
            let body = serde_json::to_vec_pretty(&json!({
                "id": format!("evt_{run}_{i}"), "object": "event",
                "api_version": "2026-06-24.dahlia", "created": t, "livemode": false,
                "type": "payment_intent.succeeded",
                "data": {"object": {"id": pi, "object": "payment_intent", "amount": AMOUNT,
                                    "amount_received": AMOUNT, "currency": "eur",
                                    "status": "succeeded", "latest_charge": format!("ch_{run}_{i}"),
                                    "metadata": {"invoice_id": invoice.to_string()}}}
            }))
            .unwrap_or_default();
            let signature = format!("t={t},v1={}", sign(&body, SECRET, t));
            Delivery {
                body: Bytes::from(body),
                signature,
                invoice,
            }
        })
        .collect()
}

/// Webhooks sent, in the order they were sent: each invoice, and when.
type Pending = Arc<Mutex<Vec<(Uuid, Instant)>>>;

/// Send `deliveries` to `url` for `warmup` then `seconds` seconds over
/// `clients` connections: closed loop when `interval` is `None`, else each
/// connection sends one request per `interval`, staggered. The run measured
/// (requests sent after the warm-up), the warm-up's, and the measured run's
/// p99 of the requests scheduled in each of its seconds.
async fn load(
    url: &str,
    deliveries: &Arc<Vec<Delivery>>,
    clients: usize,
    (warmup, seconds): (u64, u64),
    interval: Option<Duration>,
    pending: Option<&Pending>,
) -> anyhow::Result<(Run, Run, Vec<f64>)> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let measured = started + Duration::from_secs(warmup);
    let deadline = measured + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, deliveries, next) =
            (client.clone(), Arc::clone(deliveries), Arc::clone(&next));
        let (url, pending) = (url.to_owned(), pending.cloned());
        tasks.push(tokio::spawn(async move {
            let (mut samples, mut errors) = (Vec::new(), 0usize);
            let (mut early, mut early_errors) = (Vec::new(), 0usize);
            let mut due = interval.map(|i| started + i.mul_f64(c as f64 / clients as f64));
            while due.unwrap_or_else(Instant::now) < deadline {
                if let Some(at) = due {
                    tokio::time::sleep_until(at.into()).await;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = deliveries.get(i) else { break };
                let t = due.unwrap_or_else(Instant::now);
                if let (Some(at), Some(every)) = (due.as_mut(), interval) {
                    *at += every;
                }
                if let Some(p) = &pending {
                    p.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push((d.invoice, Instant::now()));
                }
                let r = client
                    .post(&url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("stripe-signature", &d.signature)
                    .body(d.body.clone())
                    .send()
                    .await?;
                let ok = r.status().is_success();
                let _ = r.bytes().await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if t < measured {
                    early.push(ms);
                    early_errors += usize::from(!ok);
                } else {
                    samples.push((t.duration_since(measured).as_secs(), ms));
                    errors += usize::from(!ok);
                }
            }
            Ok::<_, anyhow::Error>(((samples, errors), (early, early_errors)))
        }));
    }
    let (mut timed, mut errors) = (Vec::new(), 0);
    let (mut warming, mut warm_errors) = (Vec::new(), 0);
    for t in tasks {
        let ((s, e), (w, we)) = t.await??;
        timed.extend(s);
        errors += e;
        warming.extend(w);
        warm_errors += we;
    }
    let secs = measured.elapsed().as_secs_f64();
    let mut by_second = vec![Vec::new(); seconds as usize];
    for (second, ms) in &timed {
        if let Some(v) = by_second.get_mut(*second as usize) {
            v.push(*ms);
        }
    }
    let p99_by_second = by_second
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            round3(percentile(&v, 0.99))
        })
        .collect();
    Ok((
        run(timed.into_iter().map(|(_, ms)| ms).collect(), secs, errors),
        run(warming, warmup as f64, warm_errors),
        p99_by_second,
    ))
}

/// The figures of `latencies` (ms), sent over `secs` seconds.
fn run(mut latencies: Vec<f64>, secs: f64, errors: usize) -> Run {
    latencies.sort_by(f64::total_cmp);
    Run {
        requests: latencies.len(),
        per_sec: round3(latencies.len() as f64 / secs.max(0.001)),
        p50_ms: round3(percentile(&latencies, 0.5)),
        p99_ms: round3(percentile(&latencies, 0.99)),
        max_ms: round3(latencies.last().copied().unwrap_or_default()),
        errors,
    }
}

/// Watch the `invoices` read model until every webhook sent is seen and
/// `done`, or `done` passed 10 s ago: each invoice's lag from send to
/// `paid`, sorted, and how many were never seen. The inbox applies
/// deliveries oldest first, so each poll asks about the 300 oldest not yet
/// seen (a cheap query, so the poller does not load the database it
/// measures).
async fn watch(
    pool: PgPool,
    pending: Pending,
    done: CancellationToken,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut lags = Vec::new();
    let mut waiting: Vec<(Uuid, Instant)> = Vec::new();
    let mut gave_up: Option<Instant> = None;
    loop {
        waiting.extend(
            pending
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .drain(..),
        );
        if done.is_cancelled() {
            let since = *gave_up.get_or_insert_with(Instant::now);
            if waiting.is_empty() || since.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        if !waiting.is_empty() {
            let ids: Vec<Uuid> = waiting.iter().take(300).map(|(id, _)| *id).collect();
            let paid: std::collections::HashSet<Uuid> = sqlx::query_scalar(
                "SELECT id FROM invoices WHERE id = ANY($1) AND status = 'paid'",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
            let now = Instant::now();
            waiting.retain(|(id, sent)| {
                let seen = paid.contains(id);
                if seen {
                    lags.push(now.duration_since(*sent).as_secs_f64() * 1000.0);
                }
                !seen
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lags.sort_by(f64::total_cmp);
    Ok((lags, waiting.len()))
}

/// Open invoices of 15.00 EUR, `n` of them, written by 16 tasks through a
/// billing service of their own (not the server's, whose command bus so
/// holds none of them); once the read model holds them all.
async fn open_invoices(pool: &PgPool, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let billing = BillingService::new(pool);
    let ids: Arc<Vec<Uuid>> = Arc::new((0..n).map(|_| Uuid::new_v4()).collect());
    let eur = Currency::parse("eur")?;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (billing, ids, eur) = (billing.clone(), Arc::clone(&ids), eur.clone());
        tasks.push(tokio::spawn(async move {
            let meta = EventMetadata::system("bench");
            for id in ids.iter().skip(w).step_by(16) {
                let create = InvoiceCommand::Create {
                    payer_id: Uuid::new_v4(),
                    currency: eur.clone(),
                    lines: vec![Line {
                        lesson_id: Uuid::new_v4(),
                        description: "Lesson".to_owned(),
                        amount_minor: AMOUNT,
                    }],
                    due_at: chrono::Utc::now() + chrono::Duration::days(1),
                    finalize: true,
                };
                billing.execute(*id, create, &meta).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Each writer task created its ids in order, and the projection
        // follows the log: all are there once every task's last one is.
        let tails: Vec<Uuid> = (0..16)
            .filter_map(|w| ids.iter().skip(w).step_by(16).next_back().copied())
            .collect();
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM invoices WHERE id = ANY($1) AND status = 'open'",
        )
        .bind(&tails)
        .fetch_one(pool)
        .await?;
        if open as usize == tails.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the invoices never reached the read model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ids.to_vec())
}

/// Wait (at most two minutes) until the inbox has nothing pending and every
/// projection and process manager, and with `ledger` the sealer, has caught
/// up with the log (no event after its checkpoint, or the last leaf, in the
/// log's (transaction, position) order, in which the last event need not have
/// the highest position), then [`analyze`] and take a [`checkpoint`], so
/// that a run does not pay for the work the one before it left behind.
async fn settle(pool: &PgPool, ledger: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let mut settled: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM stripe_inbox WHERE status = 'pending')
                AND NOT EXISTS (SELECT 1 FROM projection_checkpoints c
                                 WHERE EXISTS (SELECT 1 FROM events e
                                                WHERE (e.transaction_id, e.global_position)
                                                    > (c.last_tx, c.last_position)))",
        )
        .fetch_one(pool)
        .await?;
        if settled && ledger {
            // The sealer too: no event after its last leaf.
            let mut conn = pool.acquire().await?;
            let (_, sealed) = lectern_projections::ledger::head(&mut conn).await?;
            settled = lectern_projections::ledger::unsealed(&mut conn, sealed, 1)
                .await?
                .events
                == 0;
        }
        if settled {
            analyze(pool).await?;
            return checkpoint(pool).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("the projections did not settle within two minutes; going on");
    analyze(pool).await?;
    checkpoint(pool).await
}

/// Give the planner statistics of what the tables now hold, as autovacuum
/// does on a server that has been running (it first visits a new database
/// up to a minute after it is created, and the whole benchmark runs inside
/// that minute). Without them, a connection that prepared the store's load
/// of many aggregates while the invoices were being opened, when `events`
/// was nearly empty, keeps that statement's generic plan, which reads every
/// invoice event for each batch: 100–570 ms a batch by the end of a run,
/// against a few ms with the plan made on statistics (docs/DEPLOYMENT.md).
async fn analyze(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

/// Write out what the work before a run left in the data files: PostgreSQL
/// leaves its writes in the page cache, and the kernel writes each file back
/// 30 s after it was first dirtied, in one burst that holds up the WAL's
/// flushes on a shared disk (docs/DEPLOYMENT.md). Without it, the seconds-long
/// seeding of the invoices (writes at several times the run's own rate)
/// lands in the run as bursts of hundreds of MB. Needs the `pg_checkpoint`
/// role (or a superuser); without it the run goes on, and says so.
async fn checkpoint(pool: &PgPool) -> anyhow::Result<()> {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("CHECKPOINT before the run failed ({e}); going on without it");
    }
    Ok(())
}

/// The bare limit: verify the signature, answer 200.
async fn relay(cancel: &CancellationToken) -> anyhow::Result<String> {
    let secrets: Arc<Secrets> = Arc::new(SECRET.parse().map_err(|e: String| anyhow::anyhow!(e))?);
    let app = axum::Router::new().route(
        "/verify",
        post(move |headers: HeaderMap, body: Bytes| {
            let secrets = Arc::clone(&secrets);
            async move {
                let header = headers
                    .get("stripe-signature")
                    .and_then(|v| v.to_str().ok());
                match verify(header, &body, &secrets, chrono::Utc::now().timestamp(), 300) {
                    Ok(_) => (StatusCode::OK, "{\"received\":true}"),
                    Err(_) => (StatusCode::BAD_REQUEST, "{}"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/verify", listener.local_addr()?);
    let stop = cancel.clone();
    tokio::spawn(async move {
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(url)
}

/// Every run, on `pool`'s database.
pub async fn run_webhooks(pool: PgPool, opts: &WebhooksBench) -> anyhow::Result<WebhooksResult> {
    let secret: [u8; 32] = rand::random();
    let keyring = Keyring::new(
        vec![Keyring::derived_key(&secret)],
        "lectern",
        "lectern-api",
    )?;
    let mut http = HttpConfig::for_tests();
    http.billing.stripe_webhook_secrets = SECRET.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let cancel = CancellationToken::new();
    let state = AppState::new(pool.clone(), http, keyring);
    let mut config = WorkerConfig::default();
    config.ledger.run_ledger = !opts.without_ledger;
    let workers = Workers::start(&state, &config, &cancel).await?;
    let server = serve(state.clone(), &cancel).await?;
    let url = format!("{}/api/v1/webhooks/stripe", server.base);
    let relay_url = relay(&cancel).await?;

    let invoices_for = |rate: u64| (rate * (opts.warmup + opts.seconds)) as usize + opts.clients;
    let n = invoices_for(opts.rate);
    let began = Instant::now();
    let invoices = open_invoices(&pool, n).await?;
    // The second open loop pays invoices of its own, opened with the first
    // so that both runs start from the same settled state.
    let over_invoices = if opts.over_rate > 0 {
        open_invoices(&pool, invoices_for(opts.over_rate)).await?
    } else {
        Vec::new()
    };
    settle(&pool, !opts.without_ledger).await?;
    eprintln!(
        "{} open invoices in {:.1} s; the open-loop run starts",
        n + over_invoices.len(),
        began.elapsed().as_secs_f64()
    );
    let paying = Arc::new(deliveries(&invoices, n, "open"));
    let open = open_loop(&pool, &url, &paying, opts.rate, opts).await?;

    settle(&pool, !opts.without_ledger).await?;
    eprintln!(
        "{:.1} s: the bare check starts",
        began.elapsed().as_secs_f64()
    );
    // The limit, at the same rate, with the same requests.
    let (relay, _, _) = load(
        &relay_url,
        &paying,
        opts.clients,
        (opts.warmup, opts.seconds),
        Some(interval(opts.clients, opts.rate)),
        None,
    )
    .await?;

    let over = if opts.over_rate > 0 {
        settle(&pool, !opts.without_ledger).await?;
        eprintln!(
            "{:.1} s: the open loop at {}/s starts",
            began.elapsed().as_secs_f64(),
            opts.over_rate
        );
        let over_paying = Arc::new(deliveries(&over_invoices, over_invoices.len(), "over"));
        Some(open_loop(&pool, &url, &over_paying, opts.over_rate, opts).await?)
    } else {
        None
    };

    // Capacity: as fast as the connections go, new events on the same invoices.
    let more = Arc::new(deliveries(&invoices, n * 4, "closed"));
    settle(&pool, !opts.without_ledger).await?;
    eprintln!(
        "{:.1} s: the closed-loop run starts",
        began.elapsed().as_secs_f64()
    );
    let (capacity, _, _) = load(
        &url,
        &more,
        opts.clients,
        (opts.warmup, opts.seconds),
        None,
        None,
    )
    .await?;

    cancel.cancel();
    workers.join().await;
    Ok(WebhooksResult {
        scenario: "webhooks",
        seconds: opts.seconds,
        clients: opts.clients,
        warmup_seconds: opts.warmup,
        p99_ratio: round3(open.lectern.p99_ms / relay.p99_ms.max(0.001)),
        open,
        over,
        relay,
        capacity,
    })
}

/// Each connection's time between two sends, for `rate` webhooks/s in all.
fn interval(clients: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(clients as f64 / rate.max(1) as f64)
}

/// Lectern, open loop at `rate`, sending `paying`, with the read model
/// watched.
async fn open_loop(
    pool: &PgPool,
    url: &str,
    paying: &Arc<Vec<Delivery>>,
    rate: u64,
    opts: &WebhooksBench,
) -> anyhow::Result<OpenLoop> {
    let pending: Pending = Arc::default();
    let done = CancellationToken::new();
    let watcher = tokio::spawn(watch(pool.clone(), Arc::clone(&pending), done.clone()));
    let writeback = tokio::spawn(watch_writeback(
        Instant::now() + Duration::from_secs(opts.warmup),
        done.clone(),
    ));
    let stopwatch = Stopwatch::start();
    let (lectern, lectern_warmup, lectern_p99_by_second) = load(
        url,
        paying,
        opts.clients,
        (opts.warmup, opts.seconds),
        Some(interval(opts.clients, rate)),
        Some(&pending),
    )
    .await?;
    let cpu_stolen_pct = stopwatch.stolen_pct();
    done.cancel();
    let (lags, effects_missing) = watcher.await??;
    let writeback_bursts = writeback.await?;
    Ok(OpenLoop {
        rate,
        lectern,
        lectern_warmup,
        lectern_p99_by_second,
        writeback_bursts,
        effect_p50_ms: round3(percentile(&lags, 0.5)),
        effect_p99_ms: round3(percentile(&lags, 0.99)),
        effect_max_ms: round3(lags.last().copied().unwrap_or_default()),
        effects_seen: lags.len(),
        effects_missing,
        cpu_stolen_pct,
    })
}

//! `lectern-bench realtime`: the realtime gateway.
//!
//! - **Drawing**: drawers send board ops over their sockets (`board.ops`)
//!   open-loop at the offered rate, while every drawer and watcher is
//!   subscribed to the board; latency runs from the op's commit (the event's
//!   `recorded_at`, which the `pub` frame carries) to its arrival at each
//!   subscriber.
//! - **The limit**: the same frames at the same rate through a bare
//!   in-process `tokio::sync::broadcast` relay over WebSockets: no store, no
//!   auth, no policy. Latency from the frame's creation to its arrival.
//! - **Resume**: subscribing with 1,000 missed events, one after another.
//! - **Idle sockets**: a real `lectern serve` process holding authenticated
//!   idle sockets; its RSS growth, and whether every socket still answers
//!   the server's pings.
//! - **Two processes**: ops committed through one `lectern serve` process,
//!   delivered to subscribers on another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::{SinkExt, StreamExt};
use lectern_api::auth::tokens::Keyring;
use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::workers::Workers;
use lectern_api::AppState;
use lectern_bench::drill::process::{sibling_lectern, ServerSpec};
use lectern_bench::stats::{percentile, round3, Stopwatch};
use lectern_domain::identity::Role;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classroom::{account, live_lesson, serve};

/// `lectern-bench realtime` options.
#[derive(Debug, Clone, Args)]
pub struct RealtimeBench {
    /// Clients drawing (each also subscribed).
    #[arg(long, default_value_t = 30)]
    pub drawers: usize,
    /// Clients only watching.
    #[arg(long, default_value_t = 30)]
    pub watchers: usize,
    /// Offered ops/s, open loop, over all drawers.
    #[arg(long, default_value_t = 3000)]
    pub rate: u64,
    /// Ops per `board.ops` command.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Measured seconds of each drawing run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Resumes measured, each with `missed` missed events.
    #[arg(long, default_value_t = 50)]
    pub resumes: usize,
    /// Missed events per resume.
    #[arg(long, default_value_t = 1000)]
    pub missed: u64,
    /// Idle sockets held open on one server process (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Seconds the idle sockets stay open, with the server pinging every 5 s.
    #[arg(long, default_value_t = 20)]
    pub idle_seconds: u64,
    /// Offered ops/s in the two-process run.
    #[arg(long, default_value_t = 500)]
    pub cross_rate: u64,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct RealtimeResult {
    pub scenario: &'static str,
    pub drawers: usize,
    pub watchers: usize,
    pub drawing: Delivery,
    pub relay: Delivery,
    /// Lectern's p99 over the relay's.
    pub p99_ratio: f64,
    pub resume_missed: u64,
    pub resume_p50_ms: f64,
    pub resume_p99_ms: f64,
    pub idle: Option<Idle>,
    pub two_processes: Delivery,
}

/// One delivery run.
#[derive(Debug, Serialize, Clone)]
pub struct Delivery {
    pub subscribers: usize,
    pub offered_ops_per_sec: u64,
    /// Ops delivered to the first subscriber, per second of the run.
    pub delivered_ops_per_sec: f64,
    /// Deliveries (op × subscriber) measured.
    pub deliveries: u64,
    /// Deliveries expected (ops × subscribers) but not received.
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Sockets the server closed before the run's end (a subscriber too
    /// slow to read, for one): their deliveries after it count as missing.
    pub closed_by_server: u64,
    /// The close codes those sockets got, and how many got each (0: the
    /// connection ended with no close frame).
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    /// The host's CPU time the hypervisor gave to other guests while the
    /// ops were sent, in percent (`None` where `/proc/stat` cannot say).
    pub cpu_stolen_pct: Option<f64>,
}

/// The idle-socket run.
#[derive(Debug, Serialize)]
pub struct Idle {
    pub sockets: usize,
    pub open_at_end: usize,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub rss_growth_mb: f64,
    pub kb_per_socket: f64,
    pub connect_secs: f64,
    pub ping_every_secs: u64,
    pub idle_secs: u64,
    /// The fewest pings any socket got (and answered) while idle.
    pub min_pings: u64,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket to `base`'s gateway, authenticated.
async fn connect(base: &str, token: &str) -> anyhow::Result<Ws> {
    let url = format!("{}/api/v1/realtime", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(
        json!({"type": "connect", "token": token}).to_string(),
    ))
    .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"connected\"") => return Ok(ws),
            Some(Ok(Message::Text(t))) => anyhow::bail!("connect answered {}", t.as_str()),
            Some(Ok(_)) => continue,
            other => anyhow::bail!("the socket ended while connecting: {other:?}"),
        }
    }
}

/// Send `frame` and wait for the answer of `kind`.
async fn request(
    ws: &mut Ws,
    frame: serde_json::Value,
    kind: &str,
) -> anyhow::Result<serde_json::Value> {
    ws.send(Message::text(frame.to_string())).await?;
    let needle = format!("\"type\":\"{kind}\"");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains(&needle) => {
                return Ok(serde_json::from_str(t.as_str())?)
            }
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"type\":\"error\"") => {
                anyhow::bail!("{}", t.as_str())
            }
            Some(Ok(_)) => continue,
            other => anyhow::bail!("the socket ended: {other:?}"),
        }
    }
}

/// The `at` of a frame (RFC 3339), read without parsing the whole frame.
fn at_of(frame: &str) -> Option<DateTime<Utc>> {
    let start = frame.find("\"at\":\"")? + 6;
    let end = start + frame[start..].find('"')?;
    DateTime::parse_from_rfc3339(&frame[start..end])
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Read `ws` until `stop`, recording each `OpApplied` pub's latency from its
/// `at`; the latencies (ms), and the server's close code if it closed the
/// socket first (0 for no close frame).
fn collect(
    mut ws: futures::stream::SplitStream<Ws>,
    stop: CancellationToken,
    counter: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<(Vec<f64>, Option<u16>)> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => return (latencies, None),
                f = ws.next() => f,
            };
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str();
                    if text.contains("\"OpApplied\"") || text.contains("\"relay\"") {
                        if let Some(at) = at_of(text) {
                            let ms =
                                (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                            latencies.push(ms);
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return (latencies, Some(frame.map_or(0, |f| u16::from(f.code))))
                }
                Some(Err(_)) | None => return (latencies, Some(0)),
                Some(Ok(_)) => {}
            }
        }
    })
}

/// The readers' latencies, and the close codes of those the server closed.
async fn gather(
    readers: Vec<tokio::task::JoinHandle<(Vec<f64>, Option<u16>)>>,
) -> anyhow::Result<(Vec<f64>, std::collections::BTreeMap<u16, u64>)> {
    let (mut latencies, mut closed) = (Vec::new(), std::collections::BTreeMap::new());
    for r in readers {
        let (l, code) = r.await?;
        latencies.extend(l);
        if let Some(code) = code {
            *closed.entry(code).or_default() += 1;
        }
    }
    Ok((latencies, closed))
}

fn delivery(
    subscribers: usize,
    offered: u64,
    first: u64,
    (secs, cpu_stolen_pct): (f64, Option<f64>),
    sent_ops: u64,
    mut latencies: Vec<f64>,
    close_codes: std::collections::BTreeMap<u16, u64>,
) -> Delivery {
    latencies.sort_by(f64::total_cmp);
    let expected = sent_ops * subscribers as u64;
    Delivery {
        subscribers,
        offered_ops_per_sec: offered,
        delivered_ops_per_sec: round3(first as f64 / secs),
        deliveries: latencies.len() as u64,
        missing: expected.saturating_sub(latencies.len() as u64),
        p50_ms: round3(percentile(&latencies, 0.5)),
        p99_ms: round3(percentile(&latencies, 0.99)),
        max_ms: round3(latencies.last().copied().unwrap_or(0.0)),
        closed_by_server: close_codes.values().sum(),
        close_codes,
        cpu_stolen_pct,
    }
}

/// Open-loop drawing on `board` through `drawers` sockets (their write
/// halves) for `seconds`: each sends one `board.ops` of `batch` ops per
/// interval, until the server closes its socket. The ops sent, and the
/// drawers whose socket the server closed.
async fn draw(
    drawers: Vec<futures::stream::SplitSink<Ws, Message>>,
    board: Uuid,
    batch: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(u64, u64)> {
    let n = drawers.len();
    let interval = Duration::from_secs_f64(n as f64 * batch as f64 / rate as f64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (c, mut sink) in drawers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut due = started + interval.mul_f64(c as f64 / n as f64);
            let mut k = 0u64;
            let mut sent = 0u64;
            while due < deadline {
                tokio::time::sleep_until(due.into()).await;
                due += interval;
                let ops: Vec<_> = (0..batch)
                    .map(|_| {
                        k += 1;
                        let el = format!("c{c}-{}", k % 200);
                        let kind = if k <= 200 { "add" } else { "move" };
                        json!({"client_id": format!("ws-{c}"), "op_id": k.to_string(), "lamport": k,
                               "kind": kind, "element_id": el, "data": {"x": k, "y": c}})
                    })
                    .collect();
                let frame = json!({"type": "cmd", "id": k, "op": "board.ops", "channel": format!("board:{board}"),
                                   "data": {"ops": ops}});
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    return (sent, true);
                }
                sent += batch as u64;
            }
            (sent, false)
        }));
    }
    let (mut sent, mut closed) = (0, 0);
    for t in tasks {
        let (s, c) = t.await?;
        sent += s;
        closed += u64::from(c);
    }
    Ok((sent, closed))
}

/// The drawing run on an in-process server.
async fn drawing(
    state: &AppState,
    base: &str,
    opts: &RealtimeBench,
) -> anyhow::Result<(Delivery, Uuid, String)> {
    let run = Uuid::new_v4().simple().to_string();
    let (tutor, tutor_token) = account(state, &run, 0, Role::Tutor).await?;
    let mut students = Vec::new();
    let mut tokens = vec![tutor_token.clone()];
    for i in 1..(opts.drawers + opts.watchers) {
        let (id, token) = account(state, &run, i, Role::Student).await?;
        students.push(id);
        tokens.push(token);
    }
    let board = live_lesson(state, tutor, &students).await?;
    let stop = CancellationToken::new();
    let first = Arc::new(AtomicU64::new(0));
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut ws = connect(base, token).await?;
        request(
            &mut ws,
            json!({"type": "sub", "channel": format!("board:{board}")}),
            "subscribed",
        )
        .await?;
        let (sink, stream) = ws.split();
        let counter = if i == 0 {
            Arc::clone(&first)
        } else {
            Arc::new(AtomicU64::new(0))
        };
        readers.push(collect(stream, stop.clone(), counter));
        if i < opts.drawers {
            sinks.push(sink);
        } else {
            std::mem::forget(sink);
        }
    }
    let started = Stopwatch::start();
    // A drawer is a reader too: its closing is counted there.
    let (sent, _) = draw(sinks, board, opts.batch, opts.rate, opts.seconds).await?;
    let secs = (started.secs(), started.stolen_pct());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (latencies, closed) = gather(readers).await?;
    // Ops refused (rate limits, conflicts) are not delivered as OpApplied:
    // count what was applied, from the log.
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Board' AND aggregate_id = $1 AND event_type = 'OpApplied'",
    )
    .bind(board.to_string())
    .fetch_one(&state.pool)
    .await?;
    anyhow::ensure!(applied as u64 <= sent, "more applied than sent");
    let figures = delivery(
        tokens.len(),
        opts.rate,
        first.load(Ordering::Relaxed),
        secs,
        applied as u64,
        latencies,
        closed,
    );
    Ok((figures, board, tutor_token))
}

/// The same frames through a bare broadcast relay.
async fn relay(opts: &RealtimeBench) -> anyhow::Result<Delivery> {
    let (tx, _) = broadcast::channel::<Arc<str>>(65_536);
    let app = axum::Router::new()
        .route(
            "/api/v1/realtime",
            get(
                |State(tx): State<broadcast::Sender<Arc<str>>>, ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(move |socket| async move {
                        let (mut sink, mut stream) = socket.split();
                        let mut rx = tx.subscribe();
                        // The client's connect frame, then forward everything.
                        let _ = stream.next().await;
                        if sink
                            .send(AxMessage::text("{\"type\":\"connected\"}"))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        // At its best: what has queued up meanwhile goes
                        // out in one write, as the gateway does.
                        while let Ok(frame) = rx.recv().await {
                            if sink.feed(AxMessage::text(frame.to_string())).await.is_err() {
                                return;
                            }
                            for _ in 1..64 {
                                let Ok(more) = rx.try_recv() else { break };
                                if sink.feed(AxMessage::text(more.to_string())).await.is_err() {
                                    return;
                                }
                            }
                            if sink.flush().await.is_err() {
                                return;
                            }
                        }
                    })
                },
            ),
        )
        .with_state(tx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    tokio::spawn(async move {
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await;
    });
    let subscribers = opts.drawers + opts.watchers;
    let first = Arc::new(AtomicU64::new(0));
    let reading = CancellationToken::new();
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let ws = connect(&base, "none").await?;
        let (sink, stream) = ws.split();
        std::mem::forget(sink);
        let counter = if i == 0 {
            Arc::clone(&first)
        } else {
            Arc::new(AtomicU64::new(0))
        };
        readers.push(collect(stream, reading.clone(), counter));
    }
    // The producers: one per drawer, each a batch of frames per interval,
    // shaped as Lectern's pub frames.
    let n = opts.drawers;
    let interval = Duration::from_secs_f64(n as f64 * opts.batch as f64 / opts.rate as f64);
    let started = Instant::now();
    let stopwatch = Stopwatch::start();
    let deadline = started + Duration::from_secs(opts.seconds);
    let offset = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for c in 0..n {
        let (tx, offset, batch) = (tx.clone(), Arc::clone(&offset), opts.batch);
        producers.push(tokio::spawn(async move {
            let mut due = started + interval.mul_f64(c as f64 / n as f64);
            let mut sent = 0u64;
            while due < deadline {
                tokio::time::sleep_until(due.into()).await;
                due += interval;
                for k in 0..batch {
                    let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    let frame = json!({"type": "pub", "channel": "relay", "offset": offset.fetch_add(1, Ordering::Relaxed),
                        "event": "relay", "at": at,
                        "data": {"client_id": format!("ws-{c}"), "op_id": k.to_string(), "kind": "move", "element_id": format!("c{c}-{k}"),
                                 "data": {"x": k, "y": c}, "server_version": sent, "lamport": sent}});
                    let _ = tx.send(frame.to_string().into());
                    sent += 1;
                }
            }
            sent
        }));
    }
    let mut sent = 0;
    for p in producers {
        sent += p.await?;
    }
    let secs = (stopwatch.secs(), stopwatch.stolen_pct());
    tokio::time::sleep(Duration::from_secs(2)).await;
    reading.cancel();
    let (latencies, closed) = gather(readers).await?;
    stop.cancel();
    Ok(delivery(
        subscribers,
        opts.rate,
        first.load(Ordering::Relaxed),
        secs,
        sent,
        latencies,
        closed,
    ))
}

/// Resumes with `missed` missed events on `board`, one after another.
async fn resumes(
    base: &str,
    token: &str,
    board: Uuid,
    opts: &RealtimeBench,
) -> anyhow::Result<(f64, f64)> {
    let mut ws = connect(base, token).await?;
    let channel = format!("board:{board}");
    let first = request(
        &mut ws,
        json!({"type": "sub", "channel": channel}),
        "subscribed",
    )
    .await?;
    let epoch = first["epoch"].as_str().unwrap_or_default().to_owned();
    let top = first["top"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        top > opts.missed,
        "the board has {top} events, fewer than {}",
        opts.missed
    );
    let mut samples = Vec::new();
    for _ in 0..opts.resumes {
        let t = Instant::now();
        let answer = request(
            &mut ws,
            json!({"type": "sub", "channel": channel, "since": {"epoch": epoch, "offset": top - opts.missed}}),
            "subscribed",
        )
        .await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            answer["recovered"] == true,
            "a resume was not recovered: {}",
            answer["reason"]
        );
        anyhow::ensure!(answer["pubs"].as_array().map(Vec::len) == Some(opts.missed as usize));
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        round3(percentile(&samples, 0.5)),
        round3(percentile(&samples, 0.99)),
    ))
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(kb / 1024.0)
}

/// Idle sockets on a real server process.
async fn idle(spec: &ServerSpec, state: &AppState, opts: &RealtimeBench) -> anyhow::Result<Idle> {
    let mut server = spec.spawn()?;
    server
        .ready(&reqwest::Client::new(), Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_mb(server.pid())?;
    let run = Uuid::new_v4().simple().to_string();
    let mut tokens = Vec::new();
    for i in 0..opts.idle.div_ceil(100) {
        tokens.push(account(state, &run, i, Role::Student).await?.1);
    }
    let base = spec.base();
    let pings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let open = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..opts.idle {
        let (base, token) = (base.clone(), tokens[i / 100].clone());
        let (pings, open, stop, gate) = (
            Arc::clone(&pings),
            Arc::clone(&open),
            stop.clone(),
            Arc::clone(&gate),
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await?;
            let mut ws = connect(&base, &token).await?;
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            let mut got = 0u64;
            // Reading answers the server's pings (tungstenite queues the pong).
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    f = ws.next() => match f {
                        Some(Ok(Message::Ping(_))) => {
                            got += 1;
                            ws.flush().await?;
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            open.fetch_sub(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            pings
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(got);
            Ok::<_, anyhow::Error>(ws)
        }));
    }
    while (open.load(Ordering::Relaxed) as usize) < opts.idle {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {} sockets connected",
            open.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(opts.idle_seconds)).await;
    let after = rss_mb(server.pid())?;
    let open_at_end = open.load(Ordering::Relaxed) as usize;
    stop.cancel();
    let mut sockets = Vec::new();
    for t in tasks {
        sockets.push(t.await??);
    }
    drop(sockets);
    let min_pings = pings
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .copied()
        .min()
        .unwrap_or(0);
    drop(server);
    Ok(Idle {
        sockets: opts.idle,
        open_at_end,
        rss_before_mb: round3(before),
        rss_after_mb: round3(after),
        rss_growth_mb: round3(after - before),
        kb_per_socket: round3((after - before) * 1024.0 / opts.idle as f64),
        connect_secs: round3(connect_secs),
        ping_every_secs: 5,
        idle_secs: opts.idle_seconds,
        min_pings,
    })
}

/// Ops committed through process A (HTTP), delivered to subscribers on B.
async fn two_processes(
    a: &ServerSpec,
    b: &ServerSpec,
    state: &AppState,
    opts: &RealtimeBench,
) -> anyhow::Result<Delivery> {
    let client = reqwest::Client::new();
    let mut server_a = a.spawn()?;
    let mut server_b = b.spawn()?;
    server_a.ready(&client, Duration::from_secs(60)).await?;
    server_b.ready(&client, Duration::from_secs(60)).await?;
    let run = Uuid::new_v4().simple().to_string();
    let (tutor, tutor_token) = account(state, &run, 0, Role::Tutor).await?;
    let mut students = Vec::new();
    let mut tokens = vec![tutor_token];
    for i in 1..10 {
        let (id, token) = account(state, &run, i, Role::Student).await?;
        students.push(id);
        tokens.push(token);
    }
    let board = live_lesson(state, tutor, &students).await?;
    let stop = CancellationToken::new();
    let first = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut ws = connect(&b.base(), token).await?;
        request(
            &mut ws,
            json!({"type": "sub", "channel": format!("board:{board}")}),
            "subscribed",
        )
        .await?;
        let (sink, stream) = ws.split();
        std::mem::forget(sink);
        let counter = if i == 0 {
            Arc::clone(&first)
        } else {
            Arc::new(AtomicU64::new(0))
        };
        readers.push(collect(stream, stop.clone(), counter));
    }
    // The drawers' sockets are on A.
    let mut sinks = Vec::new();
    let mut drains = Vec::new();
    for token in &tokens {
        let ws = connect(&a.base(), token).await?;
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        drains.push(tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {}
        }));
    }
    let started = Stopwatch::start();
    let batch = 10;
    let (sent, drawers_closed) = draw(sinks, board, batch, opts.cross_rate, opts.seconds).await?;
    let secs = (started.secs(), started.stolen_pct());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (latencies, closed) = gather(readers).await?;
    for d in drains {
        d.abort();
    }
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Board' AND aggregate_id = $1 AND event_type = 'OpApplied'",
    )
    .bind(board.to_string())
    .fetch_one(&state.pool)
    .await?;
    anyhow::ensure!(applied as u64 <= sent);
    Ok(delivery(
        tokens.len(),
        opts.cross_rate,
        first.load(Ordering::Relaxed),
        secs,
        applied as u64,
        latencies,
        {
            let mut codes = closed;
            if drawers_closed > 0 {
                // The drawers' own reads are drained, not watched: their
                // sends failing is all that is known.
                *codes.entry(0).or_default() += drawers_closed;
            }
            codes
        },
    ))
}

/// Every run, on `pool`'s database.
pub async fn run_realtime(
    pool: PgPool,
    database_url: &str,
    opts: &RealtimeBench,
) -> anyhow::Result<RealtimeResult> {
    // Sockets are file descriptors: as many as the hard limit allows.
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    let secret: [u8; 32] = rand::random();
    let secret_hex = hex::encode(secret);
    let keyring = || {
        Keyring::new(
            vec![Keyring::derived_key(&secret)],
            "lectern",
            "lectern-api",
        )
    };
    let cancel = CancellationToken::new();
    let state = AppState::new(pool.clone(), HttpConfig::for_tests(), keyring()?);
    let workers = Workers::start(&state, &WorkerConfig::default(), &cancel).await?;
    let server = serve(state.clone(), &cancel).await?;

    let (drawing, board, tutor_token) = drawing(&state, &server.base, opts).await?;
    let relay = relay(opts).await?;
    let (resume_p50_ms, resume_p99_ms) = resumes(&server.base, &tutor_token, board, opts).await?;
    cancel.cancel();
    workers.join().await;

    // Real server processes, sharing the secret key (so the tokens this
    // process issues are theirs) and the database.
    // A pool of its own: the in-process server's background runtime, now
    // stopped, may have left its connections in the first one unusable.
    let fresh = lectern_commands::pool::connect(database_url, 16).await?;
    let tokens_state = AppState::new(fresh, HttpConfig::for_tests(), keyring()?);
    let root = std::env::temp_dir().join(format!(
        "lectern-bench-realtime-{}",
        Uuid::new_v4().simple()
    ));
    let bin = sibling_lectern()?;
    let spec = |name: &str| -> anyhow::Result<ServerSpec> {
        let mut s = ServerSpec::new(&bin, database_url, &secret_hex, &root, name)?;
        s.env = vec![
            (
                "LECTERN_MAX_CONNECTIONS".into(),
                (opts.idle + 1000).to_string(),
            ),
            ("LECTERN_WS_MAX_CONNECTIONS_PER_USER".into(), "100".into()),
            ("LECTERN_WS_PING_SECS".into(), "5".into()),
        ];
        Ok(s)
    };
    let idle = if opts.idle > 0 {
        Some(idle(&spec("idle")?, &tokens_state, opts).await?)
    } else {
        None
    };
    let two_processes = two_processes(&spec("a")?, &spec("b")?, &tokens_state, opts).await?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(RealtimeResult {
        scenario: "realtime",
        drawers: opts.drawers,
        watchers: opts.watchers,
        p99_ratio: round3(drawing.p99_ms / relay.p99_ms.max(0.001)),
        drawing,
        relay,
        resume_missed: opts.missed,
        resume_p50_ms,
        resume_p99_ms,
        idle,
        two_processes,
    })
}

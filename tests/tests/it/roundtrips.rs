//! Round trips per command, counted on the wire: the pool connects through a
//! proxy that counts the client's synchronisation points (`Sync` in the
//! extended protocol, `Query` in the simple one). Each is one round trip.
//!
//! sqlx 0.8 also pings every connection as it goes back to the pool (a bare
//! `Sync`, in `PoolConnection`'s drop, after the caller has its rows). The
//! command does not wait for it, so it is counted apart: a bare `Sync` that
//! closes no work is a ping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lectern_commands::{AggregateStore, DispatchConfig, PgEventStore};
use lectern_domain::EventMetadata;
use lectern_tests::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Add, Tally};

/// Round trips that carried work, and bare pings.
#[derive(Default)]
struct Counts {
    trips: AtomicU64,
    pings: AtomicU64,
}

/// Forward client bytes to `upstream`, counting Sync and Query messages.
async fn pump(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut upstream: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Counts>,
) -> std::io::Result<()> {
    // Untyped startup packets first: SSL/GSS requests, then the startup message.
    loop {
        let len = client.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        client.read_exact(&mut body).await?;
        upstream.write_i32(len).await?;
        upstream.write_all(&body).await?;
        let code = body
            .get(..4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if code != Some(80_877_103) && code != Some(80_877_104) {
            break;
        }
    }
    let mut work = false;
    loop {
        let kind = client.read_u8().await?;
        let len = client.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        client.read_exact(&mut body).await?;
        match kind {
            b'Q' => {
                counts.trips.fetch_add(1, Ordering::SeqCst);
            }
            b'S' if work => {
                counts.trips.fetch_add(1, Ordering::SeqCst);
                work = false;
            }
            b'S' => {
                counts.pings.fetch_add(1, Ordering::SeqCst);
            }
            _ => work = true,
        }
        upstream.write_u8(kind).await?;
        upstream.write_i32(len).await?;
        upstream.write_all(&body).await?;
    }
}

/// A counting proxy in front of the test database; returns its URL.
async fn counting_proxy(db: &TestDb, counts: Arc<Counts>) -> String {
    let url = url::Url::parse(&db.url).expect("a URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&upstream)
                .await
                .expect("connect upstream");
            let (client_read, mut client_write) = client.into_split();
            let (mut server_read, server_write) = server.into_split();
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let _ = pump(client_read, server_write, counts).await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).expect("host");
    proxied.set_port(Some(addr.port())).expect("port");
    proxied.to_string()
}

#[tokio::test]
async fn a_command_costs_two_round_trips_and_one_when_cached() {
    let db = TestDb::new().await;
    let counts = Arc::new(Counts::default());
    let url = counting_proxy(&db, Arc::clone(&counts)).await;
    let pool = lectern_commands::pool::connect(&url, 1)
        .await
        .expect("connect through the proxy");
    // The proxy tells work from pings: one query is one trip and one ping.
    // (Pings are sent in the background; let the connect's own one land.)
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (trips, pings) = (
        counts.trips.load(Ordering::SeqCst),
        counts.pings.load(Ordering::SeqCst),
    );
    for _ in 0..3 {
        let _: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .expect("select");
    }
    // The release ping is sent after the caller has its rows; let it land.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The first use of a statement on a connection also prepares it.
    assert_eq!(counts.trips.load(Ordering::SeqCst) - trips, 2 + 1 + 1);
    assert_eq!(counts.pings.load(Ordering::SeqCst) - pings, 3);
    let meta = EventMetadata::system("Add", "roundtrips");
    let run = |cache: bool| {
        let store = AggregateStore::new(
            PgEventStore::<Tally>::new(pool.clone()).with_snapshots(3),
            (),
            DispatchConfig {
                cache,
                ..DispatchConfig::default()
            },
        );
        let meta = meta.clone();
        let counts = Arc::clone(&counts);
        async move {
            let mut per_command = Vec::new();
            let id = uuid::Uuid::new_v4().to_string();
            for i in 0..6 {
                let before = counts.trips.load(Ordering::SeqCst);
                store
                    .execute(
                        &id,
                        Add {
                            tag: format!("t{i}"),
                            count: 2,
                        },
                        meta.clone(),
                    )
                    .await
                    .expect("committed");
                per_command.push(counts.trips.load(Ordering::SeqCst) - before);
            }
            per_command
        }
    };
    // Uncached: load (snapshot plus tail, one query) then append (one
    // statement, with the snapshot when due). The first command also
    // prepares both statements on the connection.
    assert_eq!(run(false).await, [4, 2, 2, 2, 2, 2]);
    // Cached: the first command loads; every later one only appends.
    assert_eq!(run(true).await, [2, 1, 1, 1, 1, 1]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 24);
}

//! Round trips per command, counted on the wire: the pool connects through a
//! proxy that counts the client's synchronisation points (`Sync` in the
//! extended protocol, `Query` in the simple one). Each is one round trip.
//!
//! Two kinds are counted apart:
//! - a trip that parses a statement (`Parse`) prepares it on that connection,
//!   once per connection and statement;
//! - sqlx 0.8 pings every connection as it goes back to the pool (a bare
//!   `Sync`, in `PoolConnection`'s drop, after the caller has its rows). The
//!   caller does not wait for it, but the database and the client both pay
//!   for it. A bare `Sync` that closes no work is a ping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lectern_commands::{CommandBus, DispatchConfig, PgEventStore};
use lectern_domain::EventMetadata;
use lectern_tests::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Add, Tally};

/// Round trips that ran statements, that prepared them, and bare pings.
#[derive(Default)]
struct Counts {
    trips: AtomicU64,
    prepares: AtomicU64,
    pings: AtomicU64,
}

impl Counts {
    fn now(&self) -> [u64; 3] {
        [
            self.trips.load(Ordering::SeqCst),
            self.prepares.load(Ordering::SeqCst),
            self.pings.load(Ordering::SeqCst),
        ]
    }
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
    let (mut work, mut parse) = (false, false);
    loop {
        let kind = client.read_u8().await?;
        let len = client.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        client.read_exact(&mut body).await?;
        match kind {
            b'Q' => {
                counts.trips.fetch_add(1, Ordering::SeqCst);
            }
            b'S' if parse => {
                counts.prepares.fetch_add(1, Ordering::SeqCst);
                (work, parse) = (false, false);
            }
            b'S' if work => {
                counts.trips.fetch_add(1, Ordering::SeqCst);
                work = false;
            }
            b'S' => {
                counts.pings.fetch_add(1, Ordering::SeqCst);
            }
            b'P' => (work, parse) = (true, true),
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

/// Pings are sent in the background; long enough for one to land.
const SETTLE: Duration = Duration::from_millis(40);

#[tokio::test]
async fn a_command_costs_two_round_trips_and_one_when_cached() {
    let db = TestDb::new().await;
    let counts = Arc::new(Counts::default());
    let url = counting_proxy(&db, Arc::clone(&counts)).await;
    let pool = lectern_commands::pool::connect(&url, 4)
        .await
        .expect("connect through the proxy");
    tokio::time::sleep(SETTLE).await;
    // The proxy tells the kinds apart: through the pool, each query is one
    // trip and one ping, and its first use on a connection also prepares it
    // (which connection the pool hands out varies, so prepares are not
    // asserted, only that they are told apart).
    let before = counts.now();
    for _ in 0..3 {
        let _: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .expect("select");
        tokio::time::sleep(SETTLE).await;
    }
    let after = counts.now();
    assert_eq!([after[0] - before[0], after[2] - before[2]], [3, 3]);
    assert!(after[1] > before[1]);
    let meta = EventMetadata::system("roundtrips");
    let run = |cache: bool| {
        let store = CommandBus::new(
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
            let (mut trips, mut pings) = (Vec::new(), Vec::new());
            let id = uuid::Uuid::new_v4().to_string();
            for i in 0..6 {
                let before = counts.now();
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
                tokio::time::sleep(SETTLE).await;
                let after = counts.now();
                trips.push(after[0] - before[0]);
                pings.push(after[2] - before[2]);
            }
            (trips, pings)
        }
    };
    // Uncached: load (snapshot plus tail, one query) then append (one
    // statement, with the snapshot when due: commands 2, 3, 5 and 6 cross a
    // multiple of 3). The load's connection goes back to the pool, with its
    // ping; the committer keeps the connection it appends on, so the append
    // costs no ping.
    assert_eq!(
        run(false).await,
        (vec![2, 2, 2, 2, 2, 2], vec![1, 1, 1, 1, 1, 1])
    );
    // Connections the committer kept go back to the pool once left unused
    // (with their ping, which is why this waits before counting again).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool.num_idle(), pool.size() as usize);
    // Cached: the first command loads; every later one is one append, and
    // nothing else reaches the database.
    assert_eq!(
        run(true).await,
        (vec![2, 1, 1, 1, 1, 1], vec![1, 0, 0, 0, 0, 0])
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 24);
}

#[tokio::test]
async fn aggregates_that_start_at_once_share_their_loads() {
    let db = TestDb::new().await;
    let meta = EventMetadata::system("roundtrips");
    // 100 aggregates with 1 to 5 events each, written by a bus of their own
    // (snapshots every 3, so some load from a snapshot and a tail).
    let writer = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()).with_snapshots(3),
        (),
        DispatchConfig::default(),
    );
    let ids: Vec<String> = (0..100).map(|i| format!("start-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        for k in 0..=i % 5 {
            writer
                .execute(
                    id,
                    Add {
                        tag: format!("t{k}"),
                        count: 1,
                    },
                    meta.clone(),
                )
                .await
                .expect("committed");
        }
    }
    // A new bus, through the counting proxy, that holds none of them: one
    // command on each, all at once.
    let counts = Arc::new(Counts::default());
    let url = counting_proxy(&db, Arc::clone(&counts)).await;
    let pool = lectern_commands::pool::connect(&url, 4)
        .await
        .expect("connect through the proxy");
    // (Snapshots are read whatever the interval; one of 100 keeps the appends
    // from writing any, each of which would be a statement of its own.)
    let bus = CommandBus::new(
        PgEventStore::<Tally>::new(pool.clone()).with_snapshots(100),
        (),
        DispatchConfig::default(),
    );
    let before = counts.now();
    let committed = futures::future::join_all(ids.iter().map(|id| {
        bus.execute(
            id,
            Add {
                tag: "last".into(),
                count: 1,
            },
            meta.clone(),
        )
    }))
    .await;
    let after = counts.now();
    for (i, result) in committed.into_iter().enumerate() {
        let committed = result.expect("committed");
        assert_eq!(committed.version, (i % 5) as u64 + 2, "{}", ids[i]);
    }
    // Loaded one by one, the loads alone would be 100 round trips; shared,
    // the loads and the appends together take a handful.
    let trips = after[0] - before[0];
    assert!(trips <= 12, "{trips} round trips for 100 loads and appends");
    // Each aggregate's state was its own: its stored tags in order.
    let store = PgEventStore::<Tally>::new(db.pool.clone());
    for (i, id) in ids.iter().enumerate() {
        let mut expected: Vec<String> = (0..=i % 5).map(|k| format!("t{k}")).collect();
        expected.push("last".into());
        assert_eq!(
            store
                .load_from_events(id)
                .await
                .expect("load")
                .aggregate
                .tags,
            expected
        );
    }
}

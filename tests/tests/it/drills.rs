//! Short versions of `scripts/drill kill9` and `scripts/drill pg-restart`:
//! the same code (`lectern_bench::drill`), real `lectern serve` processes
//! killed with SIGKILL, a real PostgreSQL stopped and started, and careful
//! clients that retry each command with the same identity until it is
//! acknowledged. Every acknowledged command must then be in the log exactly
//! once, and the read models must say what the log says.

use lectern_bench::drill::verify::Verdict;
use lectern_bench::drill::{self, Common, Seen};
use lectern_tests::lectern_bin;

/// What every drill must end with: the load ran; every acknowledged command
/// is in the log once and in the read models; every command was
/// acknowledged in the end, and no answer was a 5xx other than 503 or a
/// refusal no retry could change.
fn assert_clean(verdict: &Verdict, seen: &Seen, report: &dyn std::fmt::Debug) {
    assert!(verdict.acknowledged > 100, "the load ran: {report:?}");
    assert_eq!(
        (
            verdict.lost,
            verdict.duplicated,
            verdict.read_model_mismatches
        ),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(seen.abandoned, 0, "{report:?}");
    assert!(seen.refused.is_empty(), "{report:?}");
    assert_eq!(seen.server_errors_other_than_503, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_and_duplicates_nothing() {
    let report = drill::kill9(&Common::short(8, lectern_bin()), 1)
        .await
        .expect("the drill runs");
    assert_clean(&report.verdict, &report.seen, &report);
    // The kill cut connections (no answer), and clients retried until the
    // restarted server acknowledged every command.
    assert!(report.seen.statuses.contains_key("transport"), "{report:?}");
    // The kill cut a new lesson's request: its retry took the key over and
    // got the first attempt's lesson (checked above: no duplicate, and the
    // acknowledged id is the stored one).
    assert_eq!(report.kills[0].cut, "a new lesson", "{report:?}");
    assert!(
        report.kills[0].first_ack_ms.is_some(),
        "commands were acknowledged after the kill: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_answers_503_quickly_and_loses_nothing() {
    // Eight students on one board, so commands queue behind each other.
    let common = Common {
        students: 8,
        ..Common::short(12, lectern_bin())
    };
    let report = drill::pg_restart(&common, 4).await.expect("the drill runs");
    assert_clean(&report.verdict, &report.seen, &report);
    // During the outage: 503s (never another 5xx, above), each within about
    // the pool's 1 s acquire timeout, even for commands queued on one board
    // behind others that were waiting for the database.
    assert!(report.seen.statuses.contains_key("503"), "{report:?}");
    assert!(report.seen.slow_answers.is_empty(), "{report:?}");
    assert!(
        report.recovery_ms.is_some(),
        "service came back by itself: {report:?}"
    );
}

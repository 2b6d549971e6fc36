//! The Board aggregate, given/when/then.

use serde_json::json;

use super::*;
use crate::classroom::values::OpData;
use crate::classroom::{Actor, LessonStatus, Roster};
use crate::testing;
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

const TUTOR: Uuid = Uuid::from_u128(1);
const STUDENT: Uuid = Uuid::from_u128(2);

/// Given a live lesson's board: a tutor and one student.
fn live() -> Board {
    testing::given([BoardEvent::RosterSynced {
        roster: Roster {
            lesson_version: 2,
            tutor_id: Some(TUTOR),
            students: vec![STUDENT],
            status: Some(LessonStatus::Live),
        },
    }])
}

fn op(client: &str, id: &str, lamport: u64, kind: OpKind, el: &str, data: Value) -> OpRequest {
    OpRequest {
        client_id: client.into(),
        op_id: id.into(),
        lamport,
        kind,
        element_id: (!el.is_empty()).then(|| el.to_owned()),
        data: OpData::parse(data).expect("small test data"),
    }
}

fn who(user: Uuid) -> Actor {
    Actor {
        user_id: user,
        own_only: true,
    }
}

/// When `ops` are applied by `user`, one `Apply` command each, then these
/// outcomes; the board is left with their events applied.
fn when(board: &mut Board, user: Uuid, ops: Vec<OpRequest>) -> Vec<OpOutcome> {
    ops.into_iter()
        .map(|o| {
            let [event] = apply(board, user, o).try_into().expect("one event per op");
            event.outcome().expect("an op event").2
        })
        .collect()
}

/// The events of one `Apply` command carrying `op`, applied to `board`.
fn apply(board: &mut Board, user: Uuid, op: OpRequest) -> Vec<BoardEvent> {
    testing::when(
        board,
        BoardCommand::Apply {
            by: who(user),
            ops: vec![op],
        },
    )
    .expect("a participant of a live board may apply ops")
}

fn applied(v: u64, l: u64) -> OpOutcome {
    OpOutcome::Applied {
        server_version: v,
        lamport: l,
    }
}

fn rejected(reason: RejectReason) -> OpOutcome {
    OpOutcome::Rejected { reason }
}

#[test]
fn versions_and_lamport_clocks() {
    let mut b = live();
    let out = when(
        &mut b,
        TUTOR,
        vec![
            op("t", "1", 5, OpKind::Add, "a", json!({"x": 1})),
            op("t", "2", 1, OpKind::Move, "a", json!({"x": 2})),
        ],
    );
    assert_eq!(out, [applied(1, 6), applied(2, 7)]);
}

#[test]
fn duplicates_get_the_original_answer() {
    let mut b = live();
    let o = op("t", "1", 1, OpKind::Add, "a", json!({}));
    when(&mut b, TUTOR, vec![o.clone()]);
    let [again] = apply(&mut b, TUTOR, o).try_into().expect("one event");
    assert!(matches!(again, BoardEvent::OpDuplicated { .. }));
    assert_eq!(again.outcome().expect("a test value").2, applied(1, 2));
    assert_eq!(b.server_version, 1);
    // Another user cannot use the same client id.
    let stolen = when(
        &mut b,
        STUDENT,
        vec![op("t", "9", 1, OpKind::Add, "z", json!({}))],
    );
    assert_eq!(stolen, [rejected(RejectReason::ClientIdInUse)]);
}

#[test]
fn conflicts_follow_the_policy() {
    for (policy, expected) in [
        (ConflictPolicy::LastWriteWins, applied(2, 3)),
        (
            ConflictPolicy::FirstWriteWins,
            rejected(RejectReason::Superseded),
        ),
        (ConflictPolicy::Reject, rejected(RejectReason::Conflict)),
    ] {
        let mut b = live();
        b.apply(BoardEvent::PolicyChanged { policy });
        when(
            &mut b,
            TUTOR,
            vec![op("a", "1", 1, OpKind::Add, "e", json!({}))],
        );
        // Client "b" has not seen the add (lamport 2 is not above 2) but
        // wins the (lamport, client id) tie under last-write-wins.
        let out = when(
            &mut b,
            STUDENT,
            vec![op("b", "1", 2, OpKind::Update, "e", json!({"c": 1}))],
        );
        assert_eq!(out, [expected], "{policy:?}");
    }
    // A write that has seen the last one never conflicts.
    let mut b = live();
    b.apply(BoardEvent::PolicyChanged {
        policy: ConflictPolicy::Reject,
    });
    when(
        &mut b,
        TUTOR,
        vec![op("a", "1", 1, OpKind::Add, "e", json!({}))],
    );
    let out = when(
        &mut b,
        STUDENT,
        vec![op("b", "1", 3, OpKind::Update, "e", json!({}))],
    );
    assert_eq!(out, [applied(2, 4)]);
}

#[test]
fn undo_and_redo_apply_to_own_ops() {
    let mut b = live();
    let mut model = BoardModel::default();
    let ops = vec![
        op("t", "1", 1, OpKind::Add, "a", json!({"x": 1})),
        op("t", "2", 2, OpKind::Move, "a", json!({"x": 5})),
    ];
    when(&mut b, TUTOR, ops.clone());
    // The student has nothing to undo; the tutor's ops are not theirs.
    assert_eq!(
        when(
            &mut b,
            STUDENT,
            vec![op("s", "1", 9, OpKind::Undo, "", Value::Null)]
        ),
        [rejected(RejectReason::NothingToUndo)]
    );
    let [undo] = apply(
        &mut b,
        TUTOR,
        op("t", "3", 3, OpKind::Undo, "", Value::Null),
    )
    .try_into()
    .expect("one event");
    let BoardEvent::OpApplied { target_version, .. } = &undo else {
        panic!("undo applied: {undo:?}")
    };
    assert_eq!(*target_version, Some(2));
    let [redo] = apply(
        &mut b,
        TUTOR,
        op("t", "4", 4, OpKind::Redo, "", Value::Null),
    )
    .try_into()
    .expect("one event");
    assert!(matches!(
        redo,
        BoardEvent::OpApplied {
            target_version: Some(2),
            ..
        }
    ));
    // The model replays the same log.
    for (v, o) in ops.iter().enumerate() {
        model.apply(
            v as u64 + 1,
            o.kind,
            o.element_id.as_deref(),
            o.data.as_value(),
            None,
        );
    }
    model.apply(3, OpKind::Undo, None, &Value::Null, Some(2));
    assert_eq!(model.elements["a"], json!({"x": 1}));
    model.apply(4, OpKind::Redo, None, &Value::Null, Some(2));
    assert_eq!(model.elements["a"], json!({"x": 5}));
    // Undoing the add removes the element in both.
    model.apply(5, OpKind::Undo, None, &Value::Null, Some(2));
    model.apply(6, OpKind::Undo, None, &Value::Null, Some(1));
    assert!(model.elements.is_empty());
}

#[test]
fn batches_are_all_or_nothing() {
    let mut b = live();
    let bad = op(
        "t",
        "1",
        1,
        OpKind::Batch,
        "",
        json!({"ops": [{"kind": "add", "element_id": "a", "data": {}}, {"kind": "update", "element_id": "zz", "data": {}}]}),
    );
    assert_eq!(
        when(&mut b, TUTOR, vec![bad]),
        [rejected(RejectReason::UnknownElement)]
    );
    assert!(b.elements.is_empty());
    let good = op(
        "t",
        "2",
        1,
        OpKind::Batch,
        "",
        json!({"ops": [{"kind": "add", "element_id": "a", "data": {}}, {"kind": "update", "element_id": "a", "data": {"k": 1}}]}),
    );
    assert_eq!(when(&mut b, TUTOR, vec![good]), [applied(1, 2)]);
    assert!(b.elements.contains_key("a"));
}

#[test]
fn only_participants_draw_while_live() {
    let b = live();
    let stranger = Uuid::from_u128(7);
    assert_eq!(b.may_draw(who(stranger)), Err(BoardError::NotParticipant));
    assert_eq!(b.may_draw(who(STUDENT)), Ok(()));
    assert_eq!(b.may_draw(Actor::unrestricted(stranger)), Ok(()));
    let mut ended = live();
    let mut roster = ended.roster.clone();
    roster.lesson_version = 3;
    roster.status = Some(LessonStatus::Ended);
    ended.apply(BoardEvent::RosterSynced { roster });
    assert_eq!(ended.may_draw(who(STUDENT)), Err(BoardError::NotLive));
    assert_eq!(
        when(
            &mut live(),
            STUDENT,
            vec![op("s", "1", 1, OpKind::Clear, "", Value::Null)]
        ),
        [rejected(RejectReason::ClearNotAllowed)]
    );
}

#[test]
fn checksums_ignore_member_order() {
    let a = json!({"b": 1, "a": [1, {"y": 2, "x": 1}]});
    let b: Value = serde_json::from_str(r#"{"a":[1,{"x":1,"y":2}],"b":1}"#).expect("a test value");
    assert_eq!(checksum([("e", &a)]), checksum([("e", &b)]));
    assert_ne!(checksum([("e", &a)]), checksum([("f", &a)]));
}

#[test]
fn duplicates_recorded_under_the_old_name_still_read() {
    let stored = serde_json::json!({"OpDuplicate": {
        "client_id": "t", "op_id": "1", "user_id": TUTOR,
        "original": {"status": "applied", "server_version": 1, "lamport": 2}}});
    let event: BoardEvent = serde_json::from_value(stored).expect("the old name reads");
    assert!(matches!(event, BoardEvent::OpDuplicated { .. }));
    assert_eq!(cqrs_es::DomainEvent::event_type(&event), "OpDuplicated");
}

#[test]
fn a_board_takes_a_newer_roster_copy_only() {
    let mut board: Board = testing::given([]);
    let roster = |version| Roster {
        lesson_version: version,
        tutor_id: Some(TUTOR),
        students: vec![STUDENT],
        status: Some(LessonStatus::Live),
    };
    assert_eq!(
        testing::when(&mut board, BoardCommand::SyncRoster { roster: roster(3) }),
        Ok(vec![BoardEvent::RosterSynced { roster: roster(3) }])
    );
    assert_eq!(
        testing::when(&mut board, BoardCommand::SyncRoster { roster: roster(3) }),
        Ok(vec![])
    );
    assert_eq!(
        testing::when(&mut board, BoardCommand::SyncRoster { roster: roster(2) }),
        Ok(vec![])
    );
    assert_eq!(board.roster.lesson_version, 3);
}

#[test]
fn only_the_tutor_sets_the_policy_and_a_repeat_changes_nothing() {
    let mut board = live();
    let set = |user, policy| BoardCommand::SetPolicy {
        by: who(user),
        policy,
    };
    assert_eq!(
        testing::when(&mut board, set(STUDENT, ConflictPolicy::Reject)),
        Err(BoardError::NotOwner)
    );
    assert_eq!(
        testing::when(&mut board, set(TUTOR, ConflictPolicy::Reject)),
        Ok(vec![BoardEvent::PolicyChanged {
            policy: ConflictPolicy::Reject
        }])
    );
    assert_eq!(
        testing::when(&mut board, set(TUTOR, ConflictPolicy::Reject)),
        Ok(vec![])
    );
    let mut missing: Board = testing::given([]);
    assert_eq!(
        testing::when(&mut missing, set(TUTOR, ConflictPolicy::Reject)),
        Err(BoardError::NotFound)
    );
}

#[test]
fn drawing_needs_a_live_lesson_and_a_participant() {
    let mut stranger_board = live();
    let o = op("x", "1", 1, OpKind::Add, "a", json!({}));
    assert_eq!(
        testing::when(
            &mut stranger_board,
            BoardCommand::Apply {
                by: who(Uuid::from_u128(9)),
                ops: vec![o.clone()]
            }
        ),
        Err(BoardError::NotParticipant)
    );
    let mut scheduled: Board = testing::given([BoardEvent::RosterSynced {
        roster: Roster {
            lesson_version: 1,
            tutor_id: Some(TUTOR),
            students: vec![STUDENT],
            status: Some(LessonStatus::Scheduled),
        },
    }]);
    assert_eq!(
        testing::when(
            &mut scheduled,
            BoardCommand::Apply {
                by: who(TUTOR),
                ops: vec![o]
            }
        ),
        Err(BoardError::NotLive)
    );
}

#[test]
fn a_lamport_time_past_the_bounds_is_rejected_and_no_client_pins_an_element() {
    let mut b = live();
    for (id, lamport) in [
        ("1", u64::MAX),
        ("2", MAX_LAMPORT + 1),
        ("3", MAX_LAMPORT_LEAD + 1),
    ] {
        assert_eq!(
            when(
                &mut b,
                TUTOR,
                vec![op("t", id, lamport, OpKind::Add, "a", json!({}))]
            ),
            [rejected(RejectReason::LamportOutOfRange)],
            "{lamport}"
        );
    }
    assert_eq!(b.lamport, 0, "the clock did not move");
    // The most a client may lead by is applied past it...
    assert_eq!(
        when(
            &mut b,
            TUTOR,
            vec![op("t", "4", MAX_LAMPORT_LEAD, OpKind::Add, "a", json!({}))]
        ),
        [applied(1, MAX_LAMPORT_LEAD + 1)]
    );
    // ...and another client, having seen that time, ticks past it and wins.
    assert_eq!(
        when(
            &mut b,
            STUDENT,
            vec![op(
                "s",
                "1",
                MAX_LAMPORT_LEAD + 2,
                OpKind::Move,
                "a",
                json!({"x": 1})
            )]
        ),
        [applied(2, MAX_LAMPORT_LEAD + 3)]
    );
}

//! Given/when/then for aggregates: run a command on a state as the store
//! does, without a store.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

/// The state after `events`: the "given" of a test.
pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> A {
    let mut state = A::default();
    for event in events {
        state.apply(event);
    }
    state
}

/// When `command` is handled on `state`: the events it decided, which are
/// then applied to `state` (as a commit would), or its refusal, which
/// leaves `state` as it was.
pub(crate) fn when<A>(state: &mut A, command: A::Command) -> Result<Vec<A::Event>, A::Error>
where
    A: Aggregate<Services = ()> + Clone,
{
    let mut next = state.clone();
    let sink = EventSink::default();
    // The sink applies each event to `next` as it is written.
    ready(next.handle(command, &(), &sink))?;
    *state = next;
    Ok(ready(sink.collect()))
}

/// Run a future that never waits (an aggregate does no I/O).
pub(crate) fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an aggregate's command waited"),
    }
}

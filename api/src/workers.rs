//! The background work of a server process, started in one place.
//!
//! [`Workers::start`] starts everything that runs beside the listeners: the
//! revocation watcher, the realtime gateway's log tailer, acknowledgement
//! writer and presence batches, rate-limiter pruning, the mail sender, each context's
//! workers (the delivery-expiry sweep), the projection runners and
//! process managers, and the ledger's sealer. Each task
//! is supervised (one that panics or ends before shutdown is logged, counted
//! in `lectern_worker_restarts_total` and started again after a pause), and
//! [`Workers::join`] waits for all of them once the cancellation token has
//! fired, so projection locks are released before the pool closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lectern_projections::runner::{RunnerConfig, Runners};
use lectern_projections::{Projection, Reactor, RunnerHandle, Wakeup};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::AppState;

/// The pause before a worker that stopped is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Every projection and process manager, as the runners run them.
fn log_consumers(state: &AppState) -> Vec<Arc<dyn Projection>> {
    let mut all = lectern_projections::all();
    all.extend(
        crate::routes::process_managers(state)
            .into_iter()
            .map(|p| Arc::new(Reactor(p)) as Arc<dyn Projection>),
    );
    all
}

/// The running background work.
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
    runners: Vec<RunnerHandle>,
    /// The projection runners' own runtime (see [`Workers::start`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Workers {
    /// Start every background task for `state`, until `cancel` fires.
    ///
    /// The projection runners and process managers run on a runtime of their
    /// own with one worker thread: a runner decodes and folds a batch of up
    /// to 500 events between two awaits, which on the API's runtime would
    /// hold up every request queued on the same worker thread; on a thread of
    /// its own the OS shares the cores out fairly instead.
    pub async fn start(
        state: &AppState,
        config: &WorkerConfig,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let (mut workers, wakeup) = Self::listening(state, cancel).await?;
        let auth = Arc::clone(&state.auth);
        let (pool, watch_wakeup) = (state.pool.clone(), wakeup.clone());
        workers.supervise("revocations", cancel, move |cancel| {
            crate::auth::revocations::watch(
                pool.clone(),
                Arc::clone(&auth.revocations),
                watch_wakeup.clone(),
                cancel,
            )
        });
        let auth = Arc::clone(&state.auth);
        workers.supervise("rate_limit_pruning", cancel, move |cancel| {
            let auth = Arc::clone(&auth);
            async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(60)) => auth.limits.retain_recent(),
                    }
                }
            }
        });
        let (pool, hub, revocations, tail_wakeup) = (
            state.pool.clone(),
            Arc::clone(&state.realtime),
            Arc::clone(&state.auth.revocations),
            wakeup.clone(),
        );
        workers.supervise("realtime_tail", cancel, move |cancel| {
            crate::realtime::tail::run(
                pool.clone(),
                Arc::clone(&hub),
                Arc::clone(&revocations),
                tail_wakeup.clone(),
                cancel,
            )
        });
        let (hub, batch) = (
            Arc::clone(&state.realtime),
            Duration::from_millis(state.http.realtime.presence_batch_ms.max(50)),
        );
        workers.supervise("realtime_presence", cancel, move |cancel| {
            let hub = Arc::clone(&hub);
            async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(batch) => hub.flush_presence(),
                    }
                }
            }
        });
        let acks_state = state.clone();
        workers.supervise("realtime_acks", cancel, move |cancel| {
            crate::realtime::acks::run(acks_state.clone(), cancel)
        });
        for worker in crate::routes::context_workers(state, config) {
            workers.supervise(worker.name, cancel, worker.run);
        }
        if let Some(dir) = config.mail_dir.clone() {
            let pool = state.pool.clone();
            workers.supervise("mail", cancel, move |cancel| {
                crate::mail::run(pool.clone(), dir.clone(), cancel)
            });
        }
        if config.run_projections {
            workers.start_runners(state, wakeup.clone(), cancel)?;
            if config.ledger.run_ledger {
                workers.start_sealer(state, &config.ledger, wakeup, cancel)?;
            }
        }
        Ok(workers)
    }

    /// Only the projection runners and process managers, on their own
    /// runtime: for a process that serves no requests, and for tests that
    /// start them late.
    pub async fn start_projections(
        state: &AppState,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let (mut workers, wakeup) = Self::listening(state, cancel).await?;
        workers.start_runners(state, wakeup, cancel)?;
        Ok(workers)
    }

    /// No work yet, and the process's one LISTEN connection for wake-ups.
    async fn listening(
        state: &AppState,
        cancel: &CancellationToken,
    ) -> anyhow::Result<(Self, Wakeup)> {
        let wakeup = Wakeup::listen(&state.pool, cancel.clone()).await?;
        let workers = Self {
            tasks: Vec::new(),
            runners: Vec::new(),
            runtime: None,
        };
        Ok((workers, wakeup))
    }

    fn start_runners(
        &mut self,
        state: &AppState,
        wakeup: Wakeup,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lectern-projections")
            .enable_all()
            .build()?;
        let runners = Runners {
            connect: (*state.pool.connect_options()).clone(),
            config: RunnerConfig::default(),
            wakeup,
            cancel: cancel.clone(),
        };
        {
            let _on = runtime.enter();
            self.runners = log_consumers(state)
                .into_iter()
                .map(|p| runners.spawn(p))
                .collect();
        }
        self.runtime = Some(runtime);
        Ok(())
    }

    /// The ledger's sealer, on the runners' runtime (it hashes between
    /// awaits, as a runner folds). It supervises itself: after an error it
    /// reloads its state and goes on, so it only ends with `cancel`.
    fn start_sealer(
        &mut self,
        state: &AppState,
        config: &crate::config::LedgerConfig,
        wakeup: Wakeup,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        use lectern_projections::ledger::{Sealer, SealerConfig};
        let key = Arc::new(config.key()?);
        tracing::info!(
            public_key = key.public_text(),
            "the ledger's checkpoint key"
        );
        let sealer = Sealer {
            connect: (*state.pool.connect_options()).clone(),
            key,
            config: SealerConfig {
                checkpoint_every: Duration::from_secs(config.ledger_checkpoint_secs.max(1)),
                checkpoint_leaves: config.ledger_checkpoint_events.max(1),
                publish_dir: config.ledger_publish_dir.clone(),
                ..SealerConfig::default()
            },
            wakeup,
            cancel: cancel.clone(),
        };
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the sealer runs on the runners' runtime"))?;
        self.tasks.push(runtime.spawn(sealer.run()));
        Ok(())
    }

    /// Run `task` until `cancel` fires, starting it again whenever it
    /// panics or returns early.
    fn supervise<F, Fut>(&mut self, name: &'static str, cancel: &CancellationToken, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = cancel.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let outcome = tokio::spawn(task(cancel.clone())).await;
                if cancel.is_cancelled() {
                    return;
                }
                match outcome {
                    Ok(()) => tracing::error!(worker = name, "worker stopped early; restarting"),
                    Err(e) => {
                        tracing::error!(worker = name, error = %e, "worker failed; restarting")
                    }
                }
                metrics::counter!("lectern_worker_restarts_total", "worker" => name).increment(1);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RESTART_PAUSE) => {}
                }
            }
        }));
    }

    /// Wait for every task to finish (after `cancel`); the runners release
    /// their locks. Then stop the runners' runtime.
    pub async fn join(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        for runner in std::mem::take(&mut self.runners) {
            let _ = runner.task.await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

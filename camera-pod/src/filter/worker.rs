//! The filter thread and the build thread.
//!
//! The filter thread owns the one running `Box<dyn Filter>` and runs it on the latest decoded
//! frame. The build thread owns the [`FilterBuilder`] and builds the filters switched to (a model
//! download, its session and warm-up included) while the filter thread goes on with the current
//! one; a built filter is handed over between two frames. When building fails the current filter
//! stays.
//!
//! Switch requests wait in a one-slot queue: behind the build in progress at most one request is
//! pending, and a newer one replaces it (the replaced requester is told it was superseded). A
//! build that finishes while a newer request is pending is dropped the same way, so of a burst of
//! switches only the newest takes effect. One build runs at a time, so one download.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use p2pcamera_api::ErrorCode;
use tokio::sync::oneshot;

use super::{Filter, FilterError, FilterSpec};
use crate::frame::VideoFrame;
use crate::mailbox::{LatestFrame, Put};
use crate::metrics::Metrics;

/// Builds a filter from its spec. Runs on the build thread, so it may download, load and warm up
/// a model while the filter thread keeps running the current filter.
pub type FilterBuilder = Box<dyn FnMut(&FilterSpec) -> Result<Box<dyn Filter>, FilterError> + Send>;

/// Live counters of the pipeline of one peer, read by the data channel's stats messages.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub dropped: AtomicU64,
    /// Model time of the latest filtered frame, in microseconds.
    pub model_micros: AtomicU64,
}

/// A decoded frame on its way through the filter, with where its result goes.
pub struct FilterJob {
    pub frame: VideoFrame,
    pub output: Arc<LatestFrame<VideoFrame>>,
    pub stats: Arc<PipelineStats>,
}

type SwitchReply = oneshot::Sender<Result<String, SwitchError>>;

struct SwitchRequest {
    spec: FilterSpec,
    reply: SwitchReply,
}

/// A built filter on its way to the filter thread, which answers the request once it runs it.
struct Installation {
    filter: Box<dyn Filter>,
    reply: SwitchReply,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("building the initial filter: {0}")]
    InitialFilter(FilterError),
    #[error("the filter thread stopped")]
    Stopped,
    #[error("starting the filter thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why a filter switch did not happen; the current filter stays in every case. The message is
/// what the remote caller that asked for the switch is told.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The spec was refused, or the filter it describes could not be built (see
    /// [`FilterError::client_message`] for what the caller is told).
    #[error("{}", .0.client_message())]
    Filter(#[from] FilterError),
    /// A newer switch request replaced this one before it took effect.
    #[error("superseded: a newer filter switch replaced this one before it took effect")]
    Superseded,
    #[error("the filter thread stopped")]
    Stopped,
}

impl SwitchError {
    /// The contract's code for this refusal, over HTTP and on the data channel.
    pub fn code(&self) -> ErrorCode {
        match self {
            SwitchError::Filter(FilterError::ModelNotAllowed { .. }) => ErrorCode::ModelNotAllowed,
            SwitchError::Filter(_) | SwitchError::Superseded => ErrorCode::InvalidFilter,
            SwitchError::Stopped => ErrorCode::Internal,
        }
    }
}

/// The switch request waiting for the build thread: at most one, the newest.
#[derive(Default)]
struct PendingSwitch {
    slot: Mutex<PendingSlot>,
    wake: Condvar,
}

#[derive(Default)]
struct PendingSlot {
    request: Option<SwitchRequest>,
    closed: bool,
}

impl PendingSwitch {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `request`, answering the one it replaces as superseded. Once closed the request is
    /// dropped, and its requester hears that the thread stopped.
    fn push(&self, request: SwitchRequest) {
        let mut slot = self.lock();
        if slot.closed {
            return;
        }
        if let Some(replaced) = slot.request.replace(request) {
            tracing::info!(
                filter = replaced.spec.name(),
                "filter switch superseded by a newer one before it started"
            );
            let _ = replaced.reply.send(Err(SwitchError::Superseded));
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// Waits for the next request; `None` once closed (a request still waiting is dropped, and
    /// its requester told the thread stopped).
    fn next(&self) -> Option<SwitchRequest> {
        let slot = self.lock();
        let mut slot = self
            .wake
            .wait_while(slot, |s| s.request.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        if slot.closed {
            return None;
        }
        slot.request.take()
    }

    fn is_waiting(&self) -> bool {
        self.lock().request.is_some()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}

/// Handle to the filter thread and the build thread.
pub struct FilterWorker {
    input: Arc<LatestFrame<FilterJob>>,
    pending: Arc<PendingSwitch>,
    current: Arc<Mutex<String>>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FilterWorker {
    /// Starts the build thread, builds the initial filter on it, then starts the filter thread;
    /// returns once the initial filter is ready.
    pub async fn start(
        mut builder: FilterBuilder,
        initial: FilterSpec,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WorkerError> {
        let input = Arc::new(LatestFrame::<FilterJob>::new());
        let pending = Arc::new(PendingSwitch::default());
        // One built filter at a time waits for the filter thread.
        let (installs, installed) = mpsc::sync_channel::<Installation>(1);
        let (ready_tx, ready_rx) = oneshot::channel();
        {
            let pending = pending.clone();
            // Not joined on stop: a build in progress (a download, up to its timeout) finishes
            // on its own and its filter is dropped.
            std::thread::Builder::new()
                .name("filter-build".into())
                .spawn(move || {
                    let filter = builder(&initial);
                    let built = filter.is_ok();
                    if ready_tx.send(filter).is_ok() && built {
                        build_switches(builder, &pending, &installs);
                    }
                })
                .map_err(WorkerError::Spawn)?;
        }
        let filter = match ready_rx.await {
            Ok(Ok(filter)) => filter,
            Ok(Err(error)) => return Err(WorkerError::InitialFilter(error)),
            Err(_) => return Err(WorkerError::Stopped),
        };
        let current = Arc::new(Mutex::new(filter.name().to_owned()));
        let thread = {
            let (input, current, metrics) = (input.clone(), current.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("filter".into())
                .spawn(move || run(filter, &input, &installed, &current, &metrics))
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(error) => {
                pending.close();
                return Err(WorkerError::Spawn(error));
            }
        };
        Ok(FilterWorker {
            input,
            pending,
            current,
            metrics,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands a frame to the filter, replacing one it has not started on (counted as dropped).
    pub fn submit(&self, job: FilterJob) {
        let stats = job.stats.clone();
        if self.input.put(job) == Put::Replaced {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.frames_dropped.inc();
        }
    }

    /// Name of the filter in use.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the filter in use is passthrough (whose frames may go back as they came).
    pub fn runs_passthrough(&self) -> bool {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) == FilterSpec::Passthrough.name()
    }

    /// Switches to the filter `spec` describes and returns its name once frames run through it;
    /// on error the current filter stays. Frames keep flowing through the current filter while
    /// the new one is built. A newer switch before this one takes effect supersedes it.
    pub async fn switch(&self, spec: FilterSpec) -> Result<String, SwitchError> {
        self.queue_switch(spec).await
    }

    /// Queues the switch to `spec` now, before returning (a later switch supersedes it), and
    /// returns what [`Self::switch`] answers; dropping the answer unanswered abandons the switch.
    pub fn queue_switch(
        &self,
        spec: FilterSpec,
    ) -> impl Future<Output = Result<String, SwitchError>> + Send + 'static {
        let (reply, reply_rx) = oneshot::channel();
        self.pending.push(SwitchRequest { spec, reply });
        async move { reply_rx.await.map_err(|_| SwitchError::Stopped)? }
    }

    /// Stops the filter thread after the frame in progress; refuses further switches.
    pub fn stop(&self) {
        self.pending.close();
        self.input.close();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FilterWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The build thread's loop: builds each request taken from `pending` and hands the filter to the
/// filter thread, unless a newer request came meanwhile.
fn build_switches(
    mut builder: FilterBuilder,
    pending: &PendingSwitch,
    installs: &mpsc::SyncSender<Installation>,
) {
    while let Some(request) = pending.next() {
        if request.reply.is_closed() {
            tracing::debug!(
                filter = request.spec.name(),
                "filter switch abandoned by its requester; not building it"
            );
            continue;
        }
        let started = Instant::now();
        match builder(&request.spec) {
            Err(error) => {
                tracing::warn!(%error, filter = request.spec.name(), "filter switch failed; keeping the current filter");
                let _ = request.reply.send(Err(SwitchError::Filter(error)));
            }
            Ok(_) if pending.is_waiting() => {
                tracing::info!(
                    filter = request.spec.name(),
                    "filter built, but a newer switch is waiting; dropping it"
                );
                let _ = request.reply.send(Err(SwitchError::Superseded));
            }
            Ok(filter) => {
                tracing::debug!(
                    filter = filter.name(),
                    elapsed_s = started.elapsed().as_secs_f64(),
                    "filter built; handing it to the filter thread"
                );
                let installation = Installation {
                    filter,
                    reply: request.reply,
                };
                if installs.send(installation).is_err() {
                    return;
                }
            }
        }
    }
}

/// The filter thread's loop: installs built filters between frames, runs the current one.
fn run(
    mut filter: Box<dyn Filter>,
    input: &LatestFrame<FilterJob>,
    installed: &mpsc::Receiver<Installation>,
    current: &Mutex<String>,
    metrics: &Metrics,
) {
    loop {
        if let Ok(installation) = installed.try_recv() {
            filter = installation.filter;
            let name = filter.name().to_owned();
            *current.lock().unwrap_or_else(|e| e.into_inner()) = name.clone();
            tracing::info!(filter = %name, "filter switched");
            let _ = installation.reply.send(Ok(name));
        }
        let Some(mut job) = input.take_timeout(Duration::from_millis(50)) else {
            if input.is_closed() {
                return;
            }
            continue;
        };
        let started = Instant::now();
        if let Err(error) = filter.apply(&mut job.frame) {
            tracing::warn!(%error, filter = %filter.name(), "filter failed on a frame; sending it unfiltered");
        }
        let elapsed = started.elapsed();
        metrics.model_seconds.observe(elapsed.as_secs_f64());
        job.stats
            .model_micros
            .store(elapsed.as_micros() as u64, Ordering::Relaxed);
        if job.output.put(job.frame) == Put::Replaced {
            job.stats.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.frames_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Passthrough;

    /// Paints the luma plane one value and takes its time doing it.
    struct Paint(u8, Duration);

    impl Filter for Paint {
        fn name(&self) -> &str {
            "paint"
        }
        fn apply(&mut self, frame: &mut VideoFrame) -> Result<(), FilterError> {
            std::thread::sleep(self.1);
            frame.y.fill(self.0);
            Ok(())
        }
    }

    /// The spec that builds [`Paint`] (standing in for a slow model).
    const PAINT: FilterSpec = FilterSpec::Style { style: 0 };

    /// Builds passthrough and [`PAINT`]; refuses every other spec.
    fn builder() -> FilterBuilder {
        Box::new(
            |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
                match spec {
                    FilterSpec::Passthrough => Ok(Box::new(Passthrough)),
                    spec if *spec == PAINT => Ok(Box::new(Paint(200, Duration::from_millis(30)))),
                    other => Err(FilterError::UnknownFilter(other.name().to_owned())),
                }
            },
        )
    }

    fn job(
        ts: u32,
        output: &Arc<LatestFrame<VideoFrame>>,
        stats: &Arc<PipelineStats>,
    ) -> FilterJob {
        let mut frame = VideoFrame::filled(16, 16, 50, 128, 128);
        frame.rtp_timestamp = ts;
        FilterJob {
            frame,
            output: output.clone(),
            stats: stats.clone(),
        }
    }

    /// A worker of the test builder running passthrough.
    async fn passthrough_worker() -> FilterWorker {
        FilterWorker::start(
            builder(),
            FilterSpec::Passthrough,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_queued_switch_is_queued_at_once_and_a_later_one_wins() {
        let worker = passthrough_worker().await;
        let queued = worker.queue_switch(PAINT);
        // Awaited first, but asked for second: it must be the one that stays.
        assert_eq!(
            worker.switch(FilterSpec::Passthrough).await.unwrap(),
            "passthrough"
        );
        match queued.await {
            Ok(name) => assert_eq!(name, "paint"),
            Err(error) => assert!(matches!(error, SwitchError::Superseded), "{error}"),
        }
        assert_eq!(worker.current(), "passthrough");
        worker.stop();
    }

    #[tokio::test]
    async fn switching_builds_the_new_filter_and_keeps_the_old_one_on_error() {
        let worker = passthrough_worker().await;
        assert_eq!(worker.current(), "passthrough");
        let refused = worker.switch(FilterSpec::default()).await.unwrap_err();
        assert!(
            matches!(&refused, SwitchError::Filter(FilterError::UnknownFilter(name)) if name == "selfie-blur"),
            "{refused}"
        );
        assert_eq!(worker.current(), "passthrough");
        assert_eq!(worker.switch(PAINT).await.unwrap(), "paint");
        let (output, stats) = (
            Arc::new(LatestFrame::new()),
            Arc::new(PipelineStats::default()),
        );
        worker.submit(job(7, &output, &stats));
        let frame = output.take_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((frame.y[0], frame.rtp_timestamp), (200, 7));
        worker.stop();
    }

    #[tokio::test]
    async fn a_slow_filter_drops_frames_instead_of_queueing_them() {
        let worker = FilterWorker::start(builder(), PAINT, Arc::new(Metrics::default()))
            .await
            .unwrap();
        let (output, stats) = (
            Arc::new(LatestFrame::new()),
            Arc::new(PipelineStats::default()),
        );
        // 30 frames at 5 ms intervals into a 30 ms filter.
        let mut last = 0;
        let mut received = Vec::new();
        for ts in 1..=30 {
            worker.submit(job(ts, &output, &stats));
            std::thread::sleep(Duration::from_millis(5));
            if let Some(frame) = output.try_take() {
                received.push(frame.rtp_timestamp);
            }
            last = ts;
        }
        std::thread::sleep(Duration::from_millis(100));
        received.extend(output.try_take().map(|f| f.rtp_timestamp));
        assert!(
            stats.dropped.load(Ordering::Relaxed) >= 15,
            "dropped {:?}",
            stats.dropped
        );
        assert_eq!(
            received.last(),
            Some(&last),
            "the newest frame always makes it through"
        );
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "order kept: {received:?}"
        );
        worker.stop();
    }

    /// Output frames (their luma) that arrive for frames submitted every 10 ms for `span`.
    fn run_frames(
        worker: &FilterWorker,
        span: Duration,
        output: &Arc<LatestFrame<VideoFrame>>,
        stats: &Arc<PipelineStats>,
    ) -> Vec<u8> {
        let started = Instant::now();
        let mut lumas = Vec::new();
        let mut ts = 0;
        while started.elapsed() < span {
            ts += 1;
            worker.submit(job(ts, output, stats));
            if let Some(frame) = output.take_timeout(Duration::from_millis(10)) {
                lumas.push(frame.y[0]);
            }
        }
        lumas
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_keep_flowing_through_the_old_filter_while_the_new_one_is_built() {
        let slow_build: FilterBuilder = Box::new(
            |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
                if *spec == PAINT {
                    std::thread::sleep(Duration::from_millis(800));
                    Ok(Box::new(Paint(200, Duration::ZERO)))
                } else {
                    Ok(Box::new(Passthrough))
                }
            },
        );
        let worker = Arc::new(
            FilterWorker::start(
                slow_build,
                FilterSpec::Passthrough,
                Arc::new(Metrics::default()),
            )
            .await
            .unwrap(),
        );
        let switching = tokio::spawn({
            let worker = worker.clone();
            async move { worker.switch(PAINT).await }
        });
        let (output, stats) = (
            Arc::new(LatestFrame::new()),
            Arc::new(PipelineStats::default()),
        );
        let during = tokio::task::block_in_place(|| {
            run_frames(&worker, Duration::from_millis(400), &output, &stats)
        });
        assert!(
            during.len() >= 10 && during.iter().all(|&y| y == 50),
            "frames during the build went through passthrough: {during:?}"
        );
        assert!(!switching.is_finished());
        assert_eq!(switching.await.unwrap().unwrap(), "paint");
        let after = tokio::task::block_in_place(|| {
            run_frames(&worker, Duration::from_millis(100), &output, &stats)
        });
        assert!(
            !after.is_empty() && after.iter().all(|&y| y == 200),
            "{after:?}"
        );
        worker.stop();
    }

    #[tokio::test]
    async fn of_a_burst_of_switches_only_the_newest_takes_effect() {
        let (started_tx, started) = mpsc::channel::<u8>();
        // Style n paints luma 100 + n, slowly.
        let builder: FilterBuilder = Box::new(
            move |spec: &FilterSpec| -> Result<Box<dyn Filter>, FilterError> {
                match spec {
                    FilterSpec::Style { style } => {
                        let _ = started_tx.send(*style);
                        std::thread::sleep(Duration::from_millis(300));
                        Ok(Box::new(Paint(100 + style, Duration::ZERO)))
                    }
                    _ => Ok(Box::new(Passthrough)),
                }
            },
        );
        let worker = FilterWorker::start(
            builder,
            FilterSpec::Passthrough,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap();
        let style = |style| FilterSpec::Style { style };
        // Each request is queued by the time its first poll returns.
        let mut first = Box::pin(worker.switch(style(1)));
        assert!(futures::poll!(&mut first).is_pending());
        assert_eq!(started.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        let mut second = Box::pin(worker.switch(style(2)));
        assert!(futures::poll!(&mut second).is_pending());
        let mut third = Box::pin(worker.switch(style(3)));
        assert!(futures::poll!(&mut third).is_pending());
        let newest = worker.switch(style(4));
        let (first, second, third, newest) = tokio::join!(first, second, third, newest);
        for (which, result) in [("second", second), ("third", third), ("first", first)] {
            assert!(
                matches!(result, Err(SwitchError::Superseded)),
                "{which}: {result:?}"
            );
        }
        assert_eq!(newest.unwrap(), "paint");
        assert_eq!(
            started.try_iter().collect::<Vec<_>>(),
            [4],
            "the superseded requests that had not started were never built"
        );
        let (output, stats) = (
            Arc::new(LatestFrame::new()),
            Arc::new(PipelineStats::default()),
        );
        worker.submit(job(1, &output, &stats));
        let frame = output.take_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(frame.y[0], 104);
        let superseded = SwitchError::Superseded.to_string();
        assert!(superseded.contains("superseded"), "{superseded}");
        worker.stop();
        assert!(matches!(
            worker.switch(style(5)).await,
            Err(SwitchError::Stopped)
        ));
    }

    #[tokio::test]
    async fn initial_filter_failure_is_reported() {
        let err = FilterWorker::start(
            builder(),
            FilterSpec::default(),
            Arc::new(Metrics::default()),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(
                err,
                WorkerError::InitialFilter(FilterError::UnknownFilter(_))
            ),
            "{err}"
        );
    }
}

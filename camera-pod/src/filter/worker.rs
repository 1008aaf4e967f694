//! The filter thread: owns the one `Box<dyn Filter>`, runs it on the latest decoded frame, and
//! switches filters on request by building the new one on this thread (the old one stays in
//! place when building fails).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Filter, FilterError, FilterSpec};
use crate::frame::VideoFrame;
use crate::mailbox::{LatestFrame, Put};
use crate::metrics::Metrics;

/// Builds a filter from its spec. Runs on the filter thread, so it may load and warm up a model.
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

struct SwitchRequest {
    spec: FilterSpec,
    reply: oneshot::Sender<Result<String, FilterError>>,
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

/// Why a filter switch did not happen; the current filter stays in either case.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The spec was refused, or the filter it describes could not be built.
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("the filter thread stopped")]
    Stopped,
}

/// Handle to the filter thread.
pub struct FilterWorker {
    input: Arc<LatestFrame<FilterJob>>,
    requests: Mutex<mpsc::Sender<SwitchRequest>>,
    current: Arc<Mutex<String>>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FilterWorker {
    /// Starts the thread and builds the initial filter on it; returns once it is ready.
    pub async fn start(
        mut builder: FilterBuilder,
        initial: FilterSpec,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WorkerError> {
        let input = Arc::new(LatestFrame::<FilterJob>::new());
        let current = Arc::new(Mutex::new(String::new()));
        let (requests, request_rx) = mpsc::channel::<SwitchRequest>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = {
            let (input, current, metrics) = (input.clone(), current.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("filter".into())
                .spawn(move || {
                    let filter = match builder(&initial) {
                        Ok(filter) => filter,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    *current.lock().unwrap_or_else(|e| e.into_inner()) = filter.name().to_owned();
                    let _ = ready_tx.send(Ok(()));
                    run(filter, builder, &input, &request_rx, &current, &metrics);
                })
                .map_err(WorkerError::Spawn)?
        };
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(WorkerError::InitialFilter(error)),
            Err(_) => return Err(WorkerError::Stopped),
        }
        Ok(FilterWorker {
            input,
            requests: Mutex::new(requests),
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

    /// Switches to the filter `spec` describes and returns its name; on error the current filter
    /// stays.
    pub async fn switch(&self, spec: FilterSpec) -> Result<String, SwitchError> {
        let (reply, reply_rx) = oneshot::channel();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(SwitchRequest { spec, reply })
            .map_err(|_| SwitchError::Stopped)?;
        reply_rx
            .await
            .map_err(|_| SwitchError::Stopped)?
            .map_err(SwitchError::Filter)
    }

    /// Stops the thread after the frame in progress.
    pub fn stop(&self) {
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

fn run(
    mut filter: Box<dyn Filter>,
    mut builder: FilterBuilder,
    input: &LatestFrame<FilterJob>,
    requests: &mpsc::Receiver<SwitchRequest>,
    current: &Mutex<String>,
    metrics: &Metrics,
) {
    loop {
        while let Ok(request) = requests.try_recv() {
            let result = match builder(&request.spec) {
                Ok(new) => {
                    filter = new;
                    let name = filter.name().to_owned();
                    *current.lock().unwrap_or_else(|e| e.into_inner()) = name.clone();
                    tracing::info!(filter = %name, "filter switched");
                    Ok(name)
                }
                Err(error) => {
                    tracing::warn!(%error, filter = %filter.name(), "filter switch failed; keeping the current filter");
                    Err(error)
                }
            };
            let _ = request.reply.send(result);
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

    #[tokio::test]
    async fn switching_builds_on_the_thread_and_keeps_old_filter_on_error() {
        let worker = FilterWorker::start(
            builder(),
            FilterSpec::Passthrough,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap();
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

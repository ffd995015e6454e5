//! [`VisionWorker`]: the thread that owns the face detector, and its bounded queue.
//!
//! The shell around [`super`]'s pure parts. Callers (async drivers) [`VisionSender::submit`] a
//! snapshot with an opaque tag; the worker decodes it, counts its faces and answers with a
//! [`SnapshotAnalysed`] on a bounded tokio channel, in submission order.
//!
//! Why a dedicated `std::thread` and not `tokio::task::spawn_blocking`: inference is tens of
//! milliseconds of pure CPU per snapshot, back to back under load, and the detector is loaded
//! once and owned for the process's life. In tokio's blocking pool it would hold a pool thread
//! indefinitely (the pool is shared with every other blocking call, e.g. file I/O) and a burst
//! of snapshots would fan out to as many threads as the pool allows, starving the runtime's
//! workers on a 2–4 core box. One thread bounds vision to one core, whatever arrives.
//!
//! When full, the queue **drops the oldest** snapshot and counts it
//! ([`VisionStats`]`::dropped_queue_full`): a count is about *now*, so a fresh snapshot is worth
//! more than a stale one, and a slow detector must never make the callers wait. The result
//! channel, on the other hand, is waited on (`blocking_send`): results are small and the
//! receiver is expected to keep up; while it does not, the queue in front absorbs the burst.
//!
//! Shutdown: when every [`VisionSender`] is dropped, the worker answers what is queued and ends
//! ([`VisionWorker::drain`] waits for that); [`VisionWorker::stop`] ends it after the snapshot in
//! hand, discarding the queue; a closed result receiver ends it too.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::mpsc;

use super::VisionError;
use super::centerface::Face;
use super::detector::FaceDetector;
use super::snapshot::{RejectKind, SnapshotLimits, decode_snapshot};

/// The answer for one snapshot.
#[derive(Debug)]
pub struct SnapshotAnalysed<T> {
    /// The caller's tag, as submitted.
    pub tag: T,
    /// The faces found (strongest first), or why there is no answer.
    pub faces: Result<Vec<Face>, VisionError>,
    /// Decoding plus detection, in microseconds.
    pub elapsed_micros: u64,
}

/// What happened to a submitted snapshot.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a snapshot may have displaced an older one or been refused"]
pub enum Submitted<T> {
    Queued,
    /// Queued, and the oldest queued snapshot, tagged `dropped`, was dropped to make room.
    QueuedDroppingOldest {
        dropped: T,
    },
    /// The worker has stopped; the snapshot is handed back unprocessed.
    WorkerStopped {
        tag: T,
    },
}

/// Counters, updated by the worker and readable from anywhere.
#[derive(Debug, Default)]
pub struct VisionStats {
    requests: AtomicU64,
    dropped_queue_full: AtomicU64,
    discarded_at_stop: AtomicU64,
    analysed: AtomicU64,
    faces_counted: AtomicU64,
    rejected_bad_image: [AtomicU64; RejectKind::ALL.len()],
    inference_errors: AtomicU64,
    inferences: AtomicU64,
    last_inference_micros: AtomicU64,
    total_inference_micros: AtomicU64,
}

/// A copy of [`VisionStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VisionStatsSnapshot {
    /// Snapshots accepted into the queue.
    pub requests: u64,
    /// Snapshots dropped, oldest first, because the queue was full.
    pub dropped_queue_full: u64,
    /// Snapshots still queued when the worker was stopped.
    pub discarded_at_stop: u64,
    /// Snapshots answered with faces (possibly none).
    pub analysed: u64,
    /// Faces found, summed over every analysed snapshot.
    pub faces_counted: u64,
    /// Snapshots refused before inference, by [`RejectKind`] (index `kind as usize`).
    pub rejected_bad_image: [u64; RejectKind::ALL.len()],
    /// Inferences that failed or panicked.
    pub inference_errors: u64,
    /// Inferences run, successful or not.
    pub inferences: u64,
    /// Duration of the latest inference (letterbox, model, decoding), in microseconds.
    pub last_inference_micros: u64,
    pub total_inference_micros: u64,
}

impl VisionStats {
    pub fn snapshot(&self) -> VisionStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        VisionStatsSnapshot {
            requests: get(&self.requests),
            dropped_queue_full: get(&self.dropped_queue_full),
            discarded_at_stop: get(&self.discarded_at_stop),
            analysed: get(&self.analysed),
            faces_counted: get(&self.faces_counted),
            rejected_bad_image: self.rejected_bad_image.each_ref().map(get),
            inference_errors: get(&self.inference_errors),
            inferences: get(&self.inferences),
            last_inference_micros: get(&self.last_inference_micros),
            total_inference_micros: get(&self.total_inference_micros),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl VisionStatsSnapshot {
    pub fn rejected(&self, kind: RejectKind) -> u64 {
        self.rejected_bad_image[kind as usize]
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected_bad_image.iter().sum()
    }
}

struct Request<T> {
    tag: T,
    snapshot: Vec<u8>,
}

struct QueueState<T> {
    requests: VecDeque<Request<T>>,
    senders: usize,
    stopped: bool,
}

struct Shared<T> {
    state: Mutex<QueueState<T>>,
    wake: Condvar,
    capacity: usize,
    stats: Arc<VisionStats>,
}

impl<T> Shared<T> {
    /// Every critical section only pushes, pops or flips a flag and cannot leave the state
    /// half-changed, so a poisoned lock (a panic elsewhere while holding it) is still usable.
    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next snapshot to analyse, waiting for one; `None` when the worker is to end.
    fn next(&self) -> Option<Request<T>> {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return None;
            }
            if let Some(request) = state.requests.pop_front() {
                return Some(request);
            }
            if state.senders == 0 {
                return None;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Refuses further snapshots and discards the queued ones, counting them.
    fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        let discarded = state.requests.len() as u64;
        state.requests.clear();
        drop(state);
        VisionStats::add(&self.stats.discarded_at_stop, discarded);
        self.wake.notify_all();
    }
}

/// A handle to submit snapshots to the [`VisionWorker`]; clone it freely. The worker ends once
/// every sender is dropped and the queue is answered.
pub struct VisionSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for VisionSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionSender")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl<T> VisionSender<T> {
    /// Queues a snapshot, dropping the oldest queued one if the queue is full. Never blocks
    /// beyond a short lock (no await, no I/O inside), so it is fine to call from async code.
    pub fn submit(&self, tag: T, snapshot: Vec<u8>) -> Submitted<T> {
        let mut state = self.shared.lock();
        if state.stopped {
            return Submitted::WorkerStopped { tag };
        }
        let dropped = if state.requests.len() >= self.shared.capacity {
            state.requests.pop_front().map(|request| request.tag)
        } else {
            None
        };
        state.requests.push_back(Request { tag, snapshot });
        drop(state);
        self.shared.wake.notify_one();
        let stats = &self.shared.stats;
        VisionStats::add(&stats.requests, 1);
        match dropped {
            Some(dropped) => {
                VisionStats::add(&stats.dropped_queue_full, 1);
                Submitted::QueuedDroppingOldest { dropped }
            }
            None => Submitted::Queued,
        }
    }

    pub fn stats(&self) -> Arc<VisionStats> {
        Arc::clone(&self.shared.stats)
    }
}

impl<T> Clone for VisionSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        VisionSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for VisionSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.shared.wake.notify_all();
        }
    }
}

/// The vision thread. Dropping it stops the thread (after the snapshot in hand) without
/// waiting; [`VisionWorker::stop`] and [`VisionWorker::drain`] wait, with a deadline.
pub struct VisionWorker<T> {
    shared: Arc<Shared<T>>,
    thread: Option<JoinHandle<()>>,
    /// Disconnects when the thread's function returns, however it returns.
    exited: std_mpsc::Receiver<()>,
}

impl<T> std::fmt::Debug for VisionWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionWorker")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> VisionWorker<T> {
    /// Starts the vision thread with `detector`; at most `queue_capacity` snapshots wait.
    pub fn spawn(
        detector: FaceDetector,
        limits: SnapshotLimits,
        queue_capacity: usize,
        results: mpsc::Sender<SnapshotAnalysed<T>>,
    ) -> Result<(VisionWorker<T>, VisionSender<T>), VisionError> {
        Self::spawn_with(
            move |image: &RgbImage| detector.detect(image),
            limits,
            queue_capacity,
            results,
        )
    }

    /// Like [`VisionWorker::spawn`] with any face-finding function, for tests that need a
    /// detector they control.
    pub fn spawn_with<D>(
        detect: D,
        limits: SnapshotLimits,
        queue_capacity: usize,
        results: mpsc::Sender<SnapshotAnalysed<T>>,
    ) -> Result<(VisionWorker<T>, VisionSender<T>), VisionError>
    where
        D: FnMut(&RgbImage) -> Result<Vec<Face>, VisionError> + Send + 'static,
    {
        if queue_capacity == 0 {
            return Err(VisionError::InvalidSettings {
                problems: vec!["queue_capacity must be at least 1, not 0".to_owned()],
            });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(QueueState {
                requests: VecDeque::with_capacity(queue_capacity),
                senders: 1,
                stopped: false,
            }),
            wake: Condvar::new(),
            capacity: queue_capacity,
            stats: Arc::new(VisionStats::default()),
        });
        let (exit_guard, exited) = std_mpsc::sync_channel::<()>(0);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vision".to_owned())
            .spawn(move || {
                let _exit_guard = exit_guard;
                let _stop_on_exit = StopOnExit(&thread_shared);
                run(&thread_shared, detect, &limits, &results);
            })
            .map_err(|error| VisionError::Spawn { error })?;
        let sender = VisionSender {
            shared: Arc::clone(&shared),
        };
        let worker = VisionWorker {
            shared,
            thread: Some(thread),
            exited,
        };
        Ok((worker, sender))
    }
}

impl<T> VisionWorker<T> {
    pub fn stats(&self) -> Arc<VisionStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Stops after the snapshot in hand, discarding the queued ones; waits up to `deadline`.
    /// Blocks the calling thread: from async code, call it in `spawn_blocking`.
    pub fn stop(mut self, deadline: Duration) -> Result<(), VisionError> {
        self.shared.stop();
        self.wait(deadline)
    }

    /// Waits up to `deadline` for the worker to end by itself: every sender dropped and the
    /// queue answered, or the result receiver closed. Blocks like [`VisionWorker::stop`]; on
    /// timeout the worker is stopped anyway.
    pub fn drain(mut self, deadline: Duration) -> Result<(), VisionError> {
        self.wait(deadline)
    }

    fn wait(&mut self, deadline: Duration) -> Result<(), VisionError> {
        let started = Instant::now();
        match self.exited.recv_timeout(deadline) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(VisionError::ShutdownTimedOut {
                waited_ms: started.elapsed().as_millis(),
            }),
            // Nothing is ever sent: the only way out is the guard's drop at the thread's end.
            Ok(()) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                match self.thread.take().map(JoinHandle::join) {
                    Some(Err(panic)) => Err(VisionError::Panicked {
                        message: panic_message(panic.as_ref()),
                    }),
                    Some(Ok(())) | None => Ok(()),
                }
            }
        }
    }
}

impl<T> Drop for VisionWorker<T> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.stop();
        }
    }
}

/// Marks the queue stopped when the thread ends, even by a panic, so that submitters learn
/// it instead of filling a queue nobody reads.
struct StopOnExit<'a, T>(&'a Shared<T>);

impl<T> Drop for StopOnExit<'_, T> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The thread's loop. `blocking_send` is right here: this is a plain OS thread, outside any
/// tokio runtime (where it would panic).
fn run<T, D>(
    shared: &Shared<T>,
    mut detect: D,
    limits: &SnapshotLimits,
    results: &mpsc::Sender<SnapshotAnalysed<T>>,
) where
    D: FnMut(&RgbImage) -> Result<Vec<Face>, VisionError>,
{
    tracing::debug!(capacity = shared.capacity, "vision worker started");
    while let Some(Request { tag, snapshot }) = shared.next() {
        let started = Instant::now();
        let faces = analyse(&mut detect, &snapshot, limits, &shared.stats);
        let analysed = SnapshotAnalysed {
            tag,
            faces,
            elapsed_micros: micros(started.elapsed()),
        };
        if results.blocking_send(analysed).is_err() {
            tracing::info!("vision results receiver closed; the vision worker stops");
            return;
        }
    }
    tracing::debug!("vision worker ended");
}

fn analyse<D>(
    detect: &mut D,
    snapshot: &[u8],
    limits: &SnapshotLimits,
    stats: &VisionStats,
) -> Result<Vec<Face>, VisionError>
where
    D: FnMut(&RgbImage) -> Result<Vec<Face>, VisionError>,
{
    // Snapshots are untrusted: should a decoder or the model ever panic on one, that one
    // snapshot fails and the worker carries on. Nothing is shared across the call but the
    // detector, whose model is immutable once built (tract makes fresh state per run).
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let image = match decode_snapshot(snapshot, limits) {
            Ok(image) => image,
            Err(reason) => {
                VisionStats::add(&stats.rejected_bad_image[reason.kind() as usize], 1);
                tracing::debug!(reason = %reason, "vision snapshot rejected");
                return Err(VisionError::BadImage(reason));
            }
        };
        let started = Instant::now();
        let faces = detect(&image);
        let elapsed = micros(started.elapsed());
        VisionStats::add(&stats.inferences, 1);
        VisionStats::add(&stats.total_inference_micros, elapsed);
        stats
            .last_inference_micros
            .store(elapsed, Ordering::Relaxed);
        faces.inspect_err(|_| VisionStats::add(&stats.inference_errors, 1))
    }));
    let faces = outcome.unwrap_or_else(|panic| {
        let message = panic_message(panic.as_ref());
        tracing::warn!(error = %message, "vision worker recovered from a panic on a snapshot");
        VisionStats::add(&stats.inference_errors, 1);
        Err(VisionError::Panicked { message })
    });
    match &faces {
        Ok(faces) => {
            VisionStats::add(&stats.analysed, 1);
            VisionStats::add(&stats.faces_counted, faces.len() as u64);
        }
        Err(error @ VisionError::Inference { .. }) => {
            tracing::warn!(error = %error, "face inference failed on a snapshot");
        }
        Err(_) => {}
    }
    faces
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    use image::{ImageEncoder, Rgb};
    use tokio::sync::mpsc::error::TryRecvError;

    use super::*;
    use crate::vision::{BBox, DetectorConfig, ImageFault};

    const PATIENCE: Duration = Duration::from_secs(30);

    /// A tiny PNG `width` pixels wide: the fake detector finds `width` faces in it, so each
    /// answer shows which snapshot it belongs to.
    fn snapshot_of_width(width: u32) -> Vec<u8> {
        let image = RgbImage::from_pixel(width, 1, Rgb([0, 0, 0]));
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(image.as_raw(), width, 1, image::ExtendedColorType::Rgb8)
            .expect("encoding a tiny png in memory cannot fail");
        out
    }

    fn faces(n: u32) -> Vec<Face> {
        let bbox = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 1.0,
            y2: 1.0,
        };
        (0..n).map(|_| Face { bbox, score: 0.9 }).collect()
    }

    /// The test's side of [`gated_detector`].
    struct Gate {
        /// The width of each snapshot the detector starts on.
        started: Receiver<u32>,
        /// Each message releases one snapshot; dropping it releases them all.
        release: SyncSender<()>,
    }

    /// A detector that reports each snapshot it starts on, then waits to be released.
    fn gated_detector() -> (
        impl FnMut(&RgbImage) -> Result<Vec<Face>, VisionError> + Send + 'static,
        Gate,
    ) {
        let (started_tx, started) = sync_channel(64);
        let (release, release_rx) = sync_channel::<()>(64);
        let detect = move |image: &RgbImage| {
            let _ = started_tx.send(image.width());
            let _ = release_rx.recv();
            Ok(faces(image.width()))
        };
        (detect, Gate { started, release })
    }

    /// `recv` with a deadline, from a plain test thread (no runtime needed).
    fn recv_within<T>(results: &mut mpsc::Receiver<T>, patience: Duration) -> Option<T> {
        let started = Instant::now();
        loop {
            match results.try_recv() {
                Ok(value) => return Some(value),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if started.elapsed() > patience => {
                    panic!("no vision result within {patience:?}")
                }
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn face_count(analysed: &SnapshotAnalysed<u64>) -> usize {
        match &analysed.faces {
            Ok(faces) => faces.len(),
            Err(error) => panic!("snapshot {} failed: {error}", analysed.tag),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_the_newest_are_analysed() {
        let (detect, gate) = gated_detector();
        let (results_tx, mut results) = mpsc::channel(16);
        let (worker, sender) =
            VisionWorker::spawn_with(detect, SnapshotLimits::default(), 3, results_tx)
                .expect("the thread starts");
        let stats = worker.stats();

        assert_eq!(sender.submit(0, snapshot_of_width(1)), Submitted::Queued);
        assert_eq!(
            gate.started.recv_timeout(PATIENCE),
            Ok(1),
            "the worker holds snapshot 0"
        );
        let outcomes: Vec<_> = (1..=6)
            .map(|tag| sender.submit(tag, snapshot_of_width(tag as u32 + 1)))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                Submitted::Queued,
                Submitted::Queued,
                Submitted::Queued,
                Submitted::QueuedDroppingOldest { dropped: 1 },
                Submitted::QueuedDroppingOldest { dropped: 2 },
                Submitted::QueuedDroppingOldest { dropped: 3 },
            ]
        );
        drop(gate.release);

        let mut answered = Vec::new();
        for _ in 0..4 {
            let analysed = recv_within(&mut results, PATIENCE).expect("an answer");
            answered.push((analysed.tag, face_count(&analysed)));
        }
        assert_eq!(answered, vec![(0, 1), (4, 5), (5, 6), (6, 7)]);

        drop(sender);
        worker
            .drain(PATIENCE)
            .expect("the worker ends once its senders are gone");
        assert!(
            recv_within(&mut results, PATIENCE).is_none(),
            "nothing more"
        );
        let stats = stats.snapshot();
        assert_eq!(stats.requests, 7);
        assert_eq!(stats.dropped_queue_full, 3);
        assert_eq!(stats.analysed, 4);
        assert_eq!(stats.faces_counted, 1 + 5 + 6 + 7);
        assert_eq!(stats.inferences, 4);
        assert_eq!(stats.discarded_at_stop, 0);
    }

    #[test]
    fn stop_finishes_the_snapshot_in_hand_and_discards_the_queue() {
        let (detect, gate) = gated_detector();
        let (results_tx, mut results) = mpsc::channel(16);
        let (worker, sender) =
            VisionWorker::spawn_with(detect, SnapshotLimits::default(), 8, results_tx)
                .expect("the thread starts");
        let stats = worker.stats();
        assert_eq!(sender.submit(0, snapshot_of_width(1)), Submitted::Queued);
        assert_eq!(gate.started.recv_timeout(PATIENCE), Ok(1));
        assert_eq!(sender.submit(1, snapshot_of_width(2)), Submitted::Queued);
        assert_eq!(sender.submit(2, snapshot_of_width(3)), Submitted::Queued);

        // The detector is held, so the stop cannot complete within its deadline.
        let error = worker
            .stop(Duration::from_millis(50))
            .expect_err("the snapshot in hand is still being analysed");
        assert!(
            matches!(error, VisionError::ShutdownTimedOut { .. }),
            "{error}"
        );
        assert_eq!(
            sender.submit(3, snapshot_of_width(4)),
            Submitted::WorkerStopped { tag: 3 }
        );
        drop(gate.release);

        let analysed = recv_within(&mut results, PATIENCE).expect("the snapshot in hand");
        assert_eq!((analysed.tag, face_count(&analysed)), (0, 1));
        assert!(
            recv_within(&mut results, PATIENCE).is_none(),
            "the thread ended"
        );
        assert_eq!(stats.snapshot().discarded_at_stop, 2);
    }

    #[test]
    fn a_closed_result_receiver_ends_the_worker() {
        let (results_tx, results) = mpsc::channel(1);
        let (worker, sender) = VisionWorker::spawn_with(
            |image: &RgbImage| Ok(faces(image.width())),
            SnapshotLimits::default(),
            4,
            results_tx,
        )
        .expect("the thread starts");
        drop(results);
        assert_eq!(sender.submit(7, snapshot_of_width(1)), Submitted::Queued);
        worker
            .drain(PATIENCE)
            .expect("the worker ends when nobody listens");
        assert_eq!(
            sender.submit(8, snapshot_of_width(1)),
            Submitted::WorkerStopped { tag: 8 }
        );
    }

    #[test]
    fn bad_snapshots_are_answered_and_counted_by_reason() {
        let (results_tx, mut results) = mpsc::channel(8);
        let (worker, sender) = VisionWorker::spawn_with(
            |_: &RgbImage| -> Result<Vec<Face>, VisionError> {
                panic!("no bad snapshot reaches the detector")
            },
            SnapshotLimits::default(),
            8,
            results_tx,
        )
        .expect("the thread starts");
        let _ = sender.submit(1, b"<html>not a snapshot</html>".to_vec());
        let _ = sender.submit(2, Vec::new());
        let _ = sender.submit(3, b"\x89PNG\r\n\x1a\n truncated".to_vec());
        for tag in 1..=3 {
            let analysed = recv_within(&mut results, PATIENCE).expect("an answer");
            assert_eq!(analysed.tag, tag);
            assert!(
                matches!(analysed.faces, Err(VisionError::BadImage(_))),
                "{:?}",
                analysed.faces
            );
        }
        let stats = worker.stats().snapshot();
        assert_eq!(stats.rejected(RejectKind::UnsupportedFormat), 1);
        assert_eq!(stats.rejected(RejectKind::Empty), 1);
        assert_eq!(stats.rejected_total(), 3);
        assert_eq!((stats.inferences, stats.analysed), (0, 0));
        drop(sender);
        worker.drain(PATIENCE).expect("the worker ends");
    }

    #[test]
    fn a_panic_on_one_snapshot_fails_that_snapshot_only() {
        let (results_tx, mut results) = mpsc::channel(8);
        let (worker, sender) = VisionWorker::spawn_with(
            |image: &RgbImage| {
                assert!(image.width() != 2, "a detector bug on 2-pixel-wide images");
                Ok(faces(image.width()))
            },
            SnapshotLimits::default(),
            8,
            results_tx,
        )
        .expect("the thread starts");
        for tag in 1..=3 {
            let _ = sender.submit(tag, snapshot_of_width(tag as u32));
        }
        let first = recv_within(&mut results, PATIENCE).expect("an answer");
        let second = recv_within(&mut results, PATIENCE).expect("an answer");
        let third = recv_within(&mut results, PATIENCE).expect("an answer");
        assert_eq!(face_count(&first), 1);
        assert!(matches!(second.faces, Err(VisionError::Panicked { .. })));
        assert_eq!(face_count(&third), 3);
        assert_eq!(worker.stats().snapshot().inference_errors, 1);
        drop(sender);
        worker.drain(PATIENCE).expect("the worker ends");
    }

    #[test]
    fn a_zero_capacity_queue_is_refused() {
        let (results_tx, _results) = mpsc::channel::<SnapshotAnalysed<u64>>(1);
        let spawned = VisionWorker::spawn_with(
            |_: &RgbImage| Ok(Vec::new()),
            SnapshotLimits::default(),
            0,
            results_tx,
        );
        assert!(matches!(spawned, Err(VisionError::InvalidSettings { .. })));
    }

    #[test]
    fn the_real_detector_counts_snapshots_on_its_thread() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let detector = FaceDetector::load(
            root.join("models/centerface.onnx"),
            DetectorConfig::default(),
        )
        .expect("the shipped model loads");
        let fixture = |name: &str| {
            std::fs::read(root.join("tests/fixtures/images").join(name))
                .expect("the fixture is shipped")
        };
        let (results_tx, mut results) = mpsc::channel(4);
        let (worker, sender) =
            VisionWorker::spawn(detector, SnapshotLimits::default(), 4, results_tx)
                .expect("the thread starts");
        let _ = sender.submit(1, fixture("astronaut_640x480.jpg"));
        let _ = sender.submit(2, fixture("coffee.jpg"));
        let _ = sender.submit(3, fixture("astronaut_640x480.jpg")[..2000].to_vec());
        let answers: Vec<_> = (0..3)
            .map(|_| recv_within(&mut results, PATIENCE).expect("an answer"))
            .collect();
        assert_eq!(face_count(&answers[0]), 1);
        assert_eq!(face_count(&answers[1]), 0);
        // Cut inside its scan data: refused, or decoded with grey blocks; never a panic.
        match &answers[2].faces {
            Ok(_) | Err(VisionError::BadImage(ImageFault::Corrupt { .. })) => {}
            other => panic!("unexpected outcome for a truncated jpeg: {other:?}"),
        }
        let stats = worker.stats().snapshot();
        assert_eq!(stats.faces_counted, 1);
        assert!(stats.last_inference_micros > 0);
        drop(sender);
        worker.drain(PATIENCE).expect("the worker ends");
    }
}

//! Where access-log lines go: one writer thread per destination, which
//! gathers the lines the request path renders and writes them in batches.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::time::Duration;

/// How long the writer gathers lines before writing them: short enough for
/// `kubectl logs -f` to look live, long enough for one write to carry many
/// lines under load.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// How far the lines not yet written may grow before new lines are
/// dropped (a stdout nobody reads, a full disk).
pub(super) const MAX_PENDING: usize = 8 << 20;

/// What the writer keeps of its batch buffer's capacity between batches.
const KEEP_CAPACITY: usize = 64 << 10;

/// What wakes the writer thread.
enum Wake {
    /// Lines are pending (sent when the first line of a batch is added).
    Lines,
    /// Write out every line added before this, then answer.
    Flush(mpsc::Sender<()>),
}

/// Every live writer, by destination.
static WRITERS: OnceLock<Mutex<HashMap<String, Weak<Writer>>>> = OnceLock::new();

fn writers() -> MutexGuard<'static, HashMap<String, Weak<Writer>>> {
    lock(WRITERS.get_or_init(Mutex::default))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes out every line logged so far, waiting at most `within`: the
/// writers batch, and a process that exits without this loses the last
/// batch.
pub fn flush(within: Duration) {
    let live: Vec<Arc<Writer>> = writers().values().filter_map(Weak::upgrade).collect();
    let deadline = std::time::Instant::now() + within;
    for writer in live {
        let (done_tx, done_rx) = mpsc::channel();
        if writer.wake.try_send(Wake::Flush(done_tx)).is_ok() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = done_rx.recv_timeout(left);
        }
    }
}

/// One writer thread per destination, shared by every config (and every
/// proxy in the process) that logs there. The request path renders lines
/// into `pending` and wakes the thread for the first line of a batch only;
/// the thread takes the whole batch at once and writes it.
pub(super) struct Writer {
    pub(super) pending: Arc<Mutex<Vec<u8>>>,
    wake: mpsc::SyncSender<Wake>,
    pub(super) dropped: AtomicU64,
}

impl Writer {
    pub(super) fn for_path(path: &str) -> std::io::Result<Arc<Writer>> {
        let mut all = writers();
        if let Some(w) = all.get(path).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let mut out: Box<dyn Write + Send> = match path {
            "" | "/dev/stdout" => Box::new(std::io::stdout()),
            "/dev/stderr" => Box::new(std::io::stderr()),
            p => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let pending = Arc::new(Mutex::new(Vec::new()));
        let (wake, rx) = mpsc::sync_channel::<Wake>(64);
        let batch_source = pending.clone();
        // The thread ends when the last `Writer` (the only sender) is gone,
        // after writing what was pending.
        std::thread::Builder::new()
            .name("trellis-access-log".into())
            .spawn(move || {
                let mut batch = Vec::new();
                let mut flushed = Vec::new();
                while let Ok(first) = rx.recv() {
                    if let Wake::Lines = first {
                        // Gather what comes in the next moment and write it
                        // in one go: while this thread sleeps, the request
                        // path neither wakes it nor pays a write per line
                        // (waking it per line cost ~30 µs a request at 20 k/s;
                        // Envoy flushes once a second).
                        std::thread::sleep(BATCH_WINDOW);
                    }
                    for wake in std::iter::once(first).chain(rx.try_iter()) {
                        if let Wake::Flush(done) = wake {
                            flushed.push(done);
                        }
                    }
                    std::mem::swap(&mut batch, &mut *lock(&batch_source));
                    if !batch.is_empty() {
                        let _ = out.write_all(&batch);
                        let _ = out.flush();
                    }
                    batch.clear();
                    batch.shrink_to(KEEP_CAPACITY);
                    for done in flushed.drain(..) {
                        let _ = done.send(());
                    }
                }
            })?;
        let w = Arc::new(Writer {
            pending,
            wake,
            dropped: AtomicU64::new(0),
        });
        all.insert(path.to_string(), Arc::downgrade(&w));
        Ok(w)
    }

    /// Adds a line, rendered by `render` at the end of the pending batch.
    pub(super) fn append(&self, render: impl FnOnce(&mut Vec<u8>)) {
        let first = {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                drop(pending);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "access log cannot keep up; lines dropped");
                }
                return;
            }
            let first = pending.is_empty();
            render(&mut pending);
            first
        };
        if first {
            // Full: wakes are queued already.
            let _ = self.wake.try_send(Wake::Lines);
        }
    }
}

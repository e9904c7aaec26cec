//! Log lines are gathered in memory and written out by a thread every few milliseconds, so a
//! request never waits on a write to the container runtime's pipe, and under load one write
//! carries many lines. A channel to a writer thread (tracing-appender) cost the server a wake-up
//! of that thread, and its spinning receiver, for nearly every line: on a server's one core,
//! time taken from admissions. Not lossy: past `HIGH_MARK` the logging thread writes itself.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in memory.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Pending bytes past which the line's own thread writes them out (memory stays bounded).
const HIGH_MARK: usize = 1 << 20;

struct Shared<W> {
    pending: Mutex<Vec<u8>>,
    /// Held across a take and its write, so batches reach `out` in the order they were taken.
    out: Mutex<W>,
    closed: AtomicBool,
}

impl<W: Write> Shared<W> {
    fn flush(&self) {
        let mut out = lock(&self.out);
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            // Nowhere left to report a failed log write; the next batch tries again.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
    }
}

/// A poisoned lock only means a thread panicked mid-log line; the bytes are still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer `tracing_subscriber` is given: each formatted line is appended to the batch.
pub struct LogBuffer<W>(Arc<Shared<W>>);

impl<W> Clone for LogBuffer<W> {
    fn clone(&self) -> Self {
        LogBuffer(self.0.clone())
    }
}

impl<W: Write> Write for LogBuffer<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let full = {
            let mut pending = lock(&self.0.pending);
            pending.extend_from_slice(bytes);
            pending.len() >= HIGH_MARK
        };
        if full {
            self.0.flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer<W> {
    type Writer = LogBuffer<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes what is pending every `FLUSH_EVERY`, and everything when dropped: keep it until exit.
pub struct Flusher<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> Drop for Flusher<W> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        self.shared.flush();
    }
}

/// A buffer in front of `out`, and the thread that empties it.
pub fn start<W: Write + Send + 'static>(out: W) -> (LogBuffer<W>, Flusher<W>) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::new()),
        out: Mutex::new(out),
        closed: AtomicBool::new(false),
    });
    let flushing = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            while !flushing.closed.load(Ordering::Acquire) {
                std::thread::park_timeout(FLUSH_EVERY);
                flushing.flush();
            }
        })
        .expect("the log writer thread starts");
    (
        LogBuffer(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read while the buffer owns it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    #[test]
    fn lines_come_out_in_order_without_waiting_for_exit() {
        let out = Captured::default();
        let (mut buffer, _flusher) = start(out.clone());
        for i in 0..100 {
            writeln!(buffer, "line {i}").unwrap();
        }
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.text() != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "not written: {:?}",
                out.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn dropping_the_flusher_writes_everything_pending() {
        let out = Captured::default();
        let (mut buffer, flusher) = start(out.clone());
        writeln!(buffer, "last words").unwrap();
        drop(flusher);
        assert_eq!(out.text(), "last words\n");
    }

    #[test]
    fn a_burst_past_the_high_mark_is_written_by_the_logging_thread_itself() {
        let out = Captured::default();
        let (mut buffer, flusher) = start(out.clone());
        let line = vec![b'x'; HIGH_MARK];
        buffer.write_all(&line).unwrap();
        // Written before `write_all` returned, whatever the flusher thread was doing.
        assert!(lock(&out.0).len() >= HIGH_MARK);
        assert!(lock(&flusher.shared.pending).is_empty());
    }
}

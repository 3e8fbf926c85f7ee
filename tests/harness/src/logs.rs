//! Everything logged in this test process (tracing events and `log`
//! records, every level down to debug), kept in memory so a test can search
//! it, e.g. for a secret that must never be logged; or, for tests that do
//! not search the logs, on the test's output when `RUST_LOG` asks.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Whether the capturing subscriber is the process-wide one.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the capturing subscriber as the process-wide default (once;
/// later calls do nothing). Call it before starting what should be logged.
/// When another subscriber was installed first, nothing is captured and
/// [`captured`] fails.
pub fn capture() {
    INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(Capture)
            .try_init()
            .is_ok()
    });
}

/// The text logged since [`capture`] was first called; an error when
/// nothing could be captured.
pub fn captured() -> anyhow::Result<String> {
    if INSTALLED.get() != Some(&true) {
        anyhow::bail!("logs are not captured: call `logs::capture()` before anything logs");
    }
    Ok(String::from_utf8_lossy(&lock()).into_owned())
}

/// Shows what this process logs on the test's output, filtered by
/// `RUST_LOG` (nothing when it is unset), unless a subscriber is installed
/// already.
pub fn to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn lock() -> MutexGuard<'static, Vec<u8>> {
    CAPTURED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes into [`CAPTURED`].
#[derive(Debug, Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        Capture
    }
}

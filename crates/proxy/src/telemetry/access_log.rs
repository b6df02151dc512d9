//! The JSON access log: one line per request on stdout, with the field
//! names of Istio's JSON access log format (Envoy's command operators).
//! Lines are written by a thread of their own, so that a slow stdout never
//! blocks a request; when it falls far behind, lines are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Serialize)]
pub struct Line<'a> {
    pub start_time: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'static str,
    pub response_code: u16,
    pub response_flags: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: u64,
    pub upstream_service_time: Option<u64>,
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    /// The `x-request-id` header; Istio's JSON format names it `request_id`.
    pub request_id: &'a str,
    pub authority: &'a str,
    pub user_agent: Option<&'a str>,
    pub downstream_remote_address: &'a str,
    pub route_name: Option<&'a str>,
    pub response_code_details: Option<&'a str>,
}

/// A TCP connection's line (a gateway TCP/TLS server's, a captured
/// connection's), written when it closes, with the fields Istio's JSON
/// format has for one; no HTTP fields.
#[derive(Serialize)]
pub struct TcpLine<'a> {
    pub start_time: &'a str,
    pub response_flags: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: u64,
    pub upstream_host: Option<&'a str>,
    pub upstream_cluster: &'a str,
    pub downstream_remote_address: &'a str,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
}

pub struct AccessLog {
    tx: mpsc::SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread. Returns `None` if the thread cannot start,
    /// in which case the proxy runs without an access log.
    pub fn stdout() -> Option<Self> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16 * 1024);
        let started = std::thread::Builder::new()
            .name("trellis-access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(&line);
                    // Flush when caught up: batches under load, prompt when idle.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(&line);
                    }
                    let _ = out.flush();
                }
            });
        match started {
            Ok(_) => Some(AccessLog {
                tx,
                dropped: AtomicU64::new(0),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the access log writer; access log disabled");
                None
            }
        }
    }

    pub fn write<L: Serialize>(&self, line: &L) {
        let mut buf = Vec::with_capacity(512);
        if serde_json::to_writer(&mut buf, line).is_err() {
            return;
        }
        buf.push(b'\n');
        if self.tx.try_send(buf).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "access log cannot keep up; lines dropped");
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds ("2024-05-01T12:00:00.123Z"), as Envoy
/// prints `%START_TIME%`.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // leap year, Feb 29
        assert_eq!(format_time(t), "2024-02-29T12:34:56.789Z");
    }
}

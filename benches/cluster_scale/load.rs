//! Admission load: `concurrency` workers, each on its own keep-alive HTTPS connection, sending the
//! same dry-run managed review for a fixed time; throughput and latency percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::objects;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

pub struct LoadResult {
    /// Requests answered in the measured time (after each worker's warm-up request).
    pub requests: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn client(ca_pem: &[u8], addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("ca.crt is PEM"))
        .tls_built_in_root_certs(false)
        .http1_only()
        .no_proxy()
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the client builds")
}

/// The review every request sends, serialized once: each request only writes its own uid into a
/// copy, so the generator (which shares its core with the fake API server) spends its time on
/// the exchange, not on building JSON.
pub struct Probe {
    body: Vec<u8>,
    uid_at: usize,
}

impl Probe {
    pub fn new() -> Probe {
        let body = objects::review(0);
        let uid = objects::review_uid(0);
        let uid_at = body
            .windows(uid.len())
            .position(|w| w == uid.as_bytes())
            .expect("the review holds its uid")
            + uid.len()
            - UID_SERIAL_DIGITS;
        Probe { body, uid_at }
    }

    fn body(&self) -> Vec<u8> {
        let serial = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        let mut body = self.body.clone();
        body[self.uid_at..self.uid_at + UID_SERIAL_DIGITS]
            .copy_from_slice(format!("{serial:012x}").as_bytes());
        body
    }
}

const UID_SERIAL_DIGITS: usize = 12;

/// One review; panics unless it is answered allowed (the benchmark would measure nothing).
pub async fn review(client: &reqwest::Client, url: &str, probe: &Probe) {
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(probe.body())
        .send()
        .await
        .expect("the webhook answers");
    let text = answer.bytes().await.expect("the answer is read");
    assert!(
        memchr(b"\"allowed\":true", &text),
        "the probe was not allowed: {}",
        String::from_utf8_lossy(&text)
    );
}

fn memchr(needle: &[u8], haystack: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub async fn run(
    ca_pem: &[u8],
    addr: std::net::SocketAddr,
    concurrency: usize,
    time: Duration,
) -> LoadResult {
    let url = Arc::new(format!("https://localhost:{}/mutate", addr.port()));
    let probe = Arc::new(Probe::new());
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        // One client each: its own connection, as the API server keeps one per worker.
        let client = client(ca_pem, addr);
        let (url, probe) = (url.clone(), probe.clone());
        workers.push(tokio::spawn(async move {
            review(&client, &url, &probe).await; // connect and warm up
            let mut latencies = Vec::new();
            let end = Instant::now() + time;
            while Instant::now() < end {
                let start = Instant::now();
                review(&client, &url, &probe).await;
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("a load worker"));
    }
    all.sort();
    let percentile = |p: f64| {
        all.get((all.len() as f64 * p) as usize)
            .or(all.last())
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99) = (percentile(0.5), percentile(0.99));
    LoadResult {
        requests: all.len(),
        per_second: all.len() as f64 / time.as_secs_f64(),
        p50,
        p99,
    }
}

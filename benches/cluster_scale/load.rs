//! Admission load: `concurrency` workers, each on its own keep-alive HTTPS connection, sending the
//! same dry-run managed review for a fixed time; throughput and latency percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::objects;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

pub struct LoadResult {
    pub per_second: f64,
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

/// One review; panics unless it is answered allowed (the benchmark would measure nothing).
pub async fn review(client: &reqwest::Client, url: &str) {
    let body = objects::review(NEXT_UID.fetch_add(1, Ordering::Relaxed));
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
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
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        // One client each: its own connection, as the API server keeps one per worker.
        let client = client(ca_pem, addr);
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            review(&client, &url).await; // connect and warm up
            let mut latencies = Vec::new();
            let end = Instant::now() + time;
            while Instant::now() < end {
                let start = Instant::now();
                review(&client, &url).await;
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
    let p99 = all
        .get((all.len() as f64 * 0.99) as usize)
        .or(all.last())
        .copied()
        .unwrap_or_default();
    LoadResult {
        per_second: all.len() as f64 / time.as_secs_f64(),
        p99,
    }
}

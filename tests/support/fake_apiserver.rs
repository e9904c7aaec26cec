//! An in-process fake Kubernetes API server for integration tests.
//!
//! # How to include it
//!
//! Cargo only auto-discovers `tests/*.rs`, so this file is not a test crate of its own. Pull it into a
//! test file with a path attribute:
//!
//! ```ignore
//! #[path = "support/fake_apiserver.rs"]
//! mod fake_apiserver;
//! use fake_apiserver::FakeApiServer;
//! ```
//!
//! This file is the public handle; its parts live in `tests/support/fake_apiserver/` (`store.rs`,
//! `selectors.rs`, `handlers.rs`, `watch.rs`), pulled in with `#[path]` so the module works both through
//! the `#[path]` include above and as `tests/support/mod.rs` + `pub mod fake_apiserver;`.
//!
//! It depends only on external crates (axum, hyper, hyper-util, tokio, futures, serde_json, serde_yaml,
//! base64, json-patch, kube, k8s-openapi), never on the `gpushare` library.
//!
//! # What it is
//!
//! A plain-HTTP server on `127.0.0.1:<port>` that speaks the API server's JSON list/watch protocol well
//! enough for the real `kube` client and `kube::runtime::watcher`/`reflector`:
//!
//! * one global, monotonically increasing resourceVersion (like etcd's revision), written into
//!   `metadata.resourceVersion` of every stored object; `metadata.uid` and `metadata.creationTimestamp`
//!   are filled in when missing; `metadata.generation` starts at 1 and is bumped when `spec` changes;
//! * lists are `<Kind>List` objects with `apiVersion`, `kind`, `metadata.resourceVersion` (the current
//!   global revision) and `items` (items carry no `apiVersion`/`kind`, as the real server's JSON lists);
//!   `limit`/`continue` pagination (a continue token pins the page's resourceVersion to the first page's;
//!   later pages are read from the current state, and a token older than the compaction point is 410);
//! * `?watch=true` (or `watch=1`) streams newline-delimited `{"type":...,"object":...}` events:
//!   - `resourceVersion` unset, `""` or `"0"`: synthetic `ADDED` events for all current matching objects,
//!     then live events;
//!   - `resourceVersion=N`: every stored change with revision > N (replayed from history), then live events;
//!     if N is older than the last [`FakeApiServer::compact`] the stream is HTTP 200 with one
//!     `ERROR` event carrying a `Status` with `code: 410`, `reason: "Expired"` (exactly what the real API
//!     server does for a watch, and what kube-runtime's watcher needs to fall back to a relist);
//!   - `sendInitialEvents=true`: synthetic `ADDED` events, then a `BOOKMARK` annotated
//!     `k8s.io/initial-events-end: "true"`, then live events (streaming lists);
//!   - `allowWatchBookmarks=true`: one `BOOKMARK` right after the replay, then one every
//!     [`FakeApiServer::set_bookmark_interval`] (default 2 s) carrying the newest revision delivered;
//!   - `timeoutSeconds=S`: the stream is ended cleanly after S seconds;
//!   - selectors: `fieldSelector` (`=`, `==`, `!=` on any dotted path, e.g. `metadata.name`,
//!     `metadata.namespace`) and `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
//!     `a notin (x,y)`); when a MODIFIED object starts/stops matching a selector the watcher gets
//!     ADDED/DELETED, as from the real server;
//! * item `GET` (404 `Status` with reason `NotFound` when absent), `POST` create (409 `AlreadyExists`),
//!   `PUT` replace (409 `Conflict` on a stale `metadata.resourceVersion`), `PATCH` (merge, strategic-merge
//!   treated as merge, JSON patch, apply-patch treated as merge-with-create), `DELETE`;
//! * `GET /version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}` discovery documents;
//! * unknown paths and unknown resources: 404 `Status` JSON.
//!
//! Resources served (group/version plural, Kind): `v1 nodes` (cluster), `v1 namespaces` (cluster),
//! `v1 configmaps`, `v1 secrets`, `v1 pods`, `v1 events`, `apps/v1 deployments`, `replicasets`, `statefulsets`,
//! `daemonsets`, `batch/v1 jobs`, `cronjobs`, `events.k8s.io/v1 events` (namespaced),
//! `admissionregistration.k8s.io/v1 mutatingwebhookconfigurations` (cluster). Events created or patched
//! through either events API are also recorded in order for [`FakeApiServer::events`].
//!
//! # Outages
//!
//! [`FakeApiServer::stop`] aborts the accept loop and every connection task, so open watch streams are cut
//! mid-body (the client sees the connection drop, as in an API server crash); the stored objects and
//! history survive. [`FakeApiServer::start_on`] (or [`FakeApiServer::restart`]) serves the same state
//! again, typically on the same address so kubeconfigs and clients keep working.
//!
//! # API summary
//!
//! ```ignore
//! FakeApiServer::start().await -> FakeApiServer                // fresh state, 127.0.0.1:0
//! FakeApiServer::new() -> FakeApiServer                        // fresh state, not listening
//! srv.start_on(addr: SocketAddr).await                         // (re)listen on addr, same state
//! srv.restart().await                                          // stop + start_on(srv.addr())
//! srv.stop().await                                             // outage: drop listener + all connections
//! srv.is_running() -> bool
//! srv.addr() -> SocketAddr;  srv.url() -> String               // "http://127.0.0.1:PORT"
//! srv.kubeconfig(dir: &Path) -> PathBuf                        // writes dir/kubeconfig
//! client_from_kubeconfig(path: &Path).await -> kube::Client    // free function
//! srv.apply(obj: Value) -> Value                               // create or replace, returns stored object
//! srv.delete(kind: &str, namespace: Option<&str>, name: &str) -> Option<Value>
//! srv.get(kind, namespace, name) -> Option<Value>;  srv.list(kind) -> Vec<Value>
//! srv.compact()                                                // forget history up to now
//! srv.resource_version() -> u64
//! srv.events() -> Vec<Value>                                   // posted Events (core and events.k8s.io)
//! srv.requests() -> Vec<RecordedRequest>;  srv.request_count(path_prefix) -> usize;  srv.clear_requests()
//! srv.list_request_count(path) -> usize;  srv.watch_request_count(path) -> usize   // exact path
//! srv.active_watches(kind) -> usize                            // open watch streams on that resource
//! srv.set_bookmark_interval(d: Duration)
//! srv.fail_requests(path_prefix, code: u16);  srv.clear_failures()   // inject API errors (persistent)
//! srv.fail_next_requests(path_prefix, code: u16, times: usize)        // inject transient API errors
//! ```
//!
//! `kind` arguments accept a Kind (`"Node"`, `"ConfigMap"`, `"Deployment"`, `"Event"` = core v1 Event),
//! a plural (`"nodes"`), or `"group/plural"` (`"events.k8s.io/events"`).
#![allow(dead_code)]

#[path = "fake_apiserver/handlers.rs"]
mod handlers;
#[path = "fake_apiserver/selectors.rs"]
mod selectors;
#[path = "fake_apiserver/store.rs"]
mod store;
#[path = "fake_apiserver/watch.rs"]
mod watch;

use handlers::*;
use selectors::*;
use store::*;
#[allow(unused_imports)]
pub use store::{RecordedRequest, ResourceDef, RESOURCES};
use watch::*;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpSocket},
    task::{JoinHandle, JoinSet},
};

// ---------------------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------------------

/// The fake API server. Dropping it stops serving.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// While stopped, the port stays bound but not listening: connections are refused, as by a
    /// server that is down, and no other test's listener or client can take the port meanwhile.
    reserved: Mutex<Option<TcpSocket>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl FakeApiServer {
    /// A server with an empty store that is not listening yet (see [`FakeApiServer::start_on`]).
    pub fn new() -> Self {
        let server = FakeApiServer {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new()),
                addr: Mutex::new(None),
            }),
            task: Mutex::new(None),
            reserved: Mutex::new(None),
        };
        // The namespaces every cluster has, as a real API server creates them.
        for namespace in ["default", "kube-system", "gpushare-system"] {
            server.apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}}
            }));
        }
        server
    }

    /// A server with an empty store, listening on `127.0.0.1:<free port>`.
    pub async fn start() -> Self {
        let srv = Self::new();
        srv.start_on("127.0.0.1:0".parse().unwrap()).await;
        srv
    }

    /// Start serving the current state on `addr` (port 0 picks a free port). Stops first if running.
    /// Listens on the port [`FakeApiServer::stop`] kept when `addr` is that port; otherwise retries
    /// binding for up to 10 s (the previous listener's port may take a moment to free).
    pub async fn start_on(&self, addr: SocketAddr) {
        self.stop().await;
        let reserved = self.reserved.lock().unwrap().take();
        let listener = match reserved.filter(|socket| socket.local_addr().ok() == Some(addr)) {
            Some(socket) => socket
                .listen(1024)
                .expect("fake apiserver: listen on its kept port"),
            None => bind_within(addr, Duration::from_secs(10)).await,
        };
        let bound = listener.local_addr().expect("local_addr");
        *self.shared.addr.lock().unwrap() = Some(bound);
        let router = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let task = tokio::spawn(serve(listener, router));
        *self.task.lock().unwrap() = Some(task);
    }

    /// Simulate an outage: close the listener and cut every open connection (watch streams included).
    /// The store is kept.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
            let addr = *self.shared.addr.lock().unwrap();
            *self.reserved.lock().unwrap() = addr.and_then(|addr| reserve(addr).ok());
        }
    }

    /// `stop()` then `start_on(self.addr())`.
    pub async fn restart(&self) {
        let addr = self.addr();
        self.start_on(addr).await;
    }

    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// The address last bound (still reported while stopped).
    pub fn addr(&self) -> SocketAddr {
        self.shared
            .addr
            .lock()
            .unwrap()
            .expect("fake apiserver was never started")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Write `dir/kubeconfig` pointing at this server (dummy bearer token) and return its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake-user\n  user:\n    token: fake-token\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake-user\n    namespace: default\n\
             current-context: fake\n\
             preferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    // ----- mutators ---------------------------------------------------------------------------------------

    /// Create or replace an object (by apiVersion+kind, namespace, name); emits ADDED or MODIFIED.
    /// A namespaced object without a namespace goes to `default`. Returns the stored object.
    pub fn apply(&self, obj: Value) -> Value {
        let res = resolve_object(&obj);
        self.shared
            .lock()
            .upsert(res, obj, true, true, false)
            .unwrap_or_else(|e| panic!("fake apiserver apply: {}", e.message))
            .0
    }

    /// Delete an object; emits DELETED. Returns the deleted object (with the deletion's resourceVersion).
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resolve_kind(kind);
        let ns = if RESOURCES[res].namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        self.shared.lock().remove(res, ns, name)
    }

    /// Forget all history up to the current revision: watches and continued lists from an older
    /// resourceVersion get 410 Expired.
    pub fn compact(&self) {
        let mut s = self.shared.lock();
        s.compacted = s.rv;
        s.history.clear();
    }

    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.lock().bookmark_interval = interval;
    }

    /// Answer every request whose path starts with `path_prefix` with a `Status` of this code, until
    /// [`FakeApiServer::clear_failures`]. Note: the kube 5 client retries 429/503/504 by itself (up
    /// to 15 times, exponential backoff from 5 ms: minutes in total), so a persistent 503 makes
    /// calls hang; use e.g. 500 or 403 for a persistent failure, or
    /// [`FakeApiServer::fail_next_requests`] for transient ones.
    pub fn fail_requests(&self, path_prefix: &str, code: u16) {
        self.shared
            .lock()
            .failures
            .push((path_prefix.to_string(), code, None));
    }

    /// Answer the next `times` requests whose path starts with `path_prefix` with a `Status` of
    /// this code.
    pub fn fail_next_requests(&self, path_prefix: &str, code: u16, times: usize) {
        self.shared
            .lock()
            .failures
            .push((path_prefix.to_string(), code, Some(times)));
    }

    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    // ----- inspection -------------------------------------------------------------------------------------

    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resolve_kind(kind);
        let ns = if RESOURCES[res].namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        self.shared
            .lock()
            .objects
            .get(&(res, ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn list(&self, kind: &str) -> Vec<Value> {
        let res = resolve_kind(kind);
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Events created through `POST /api/v1/namespaces/{ns}/events` or
    /// `POST /apis/events.k8s.io/v1/namespaces/{ns}/events`, in creation order; later PATCH/PUT of the same
    /// event replace its entry.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Number of requests whose path starts with `path_prefix`.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    /// Number of GET list (non-watch) requests on exactly `path`.
    pub fn list_request_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path == path && !r.is_watch())
            .count()
    }

    /// Number of watch requests on exactly `path`.
    pub fn watch_request_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path == path && r.is_watch())
            .count()
    }

    /// Open watch streams on a resource (closed streams are noticed at the next change or bookmark).
    pub fn active_watches(&self, kind: &str) -> usize {
        let res = resolve_kind(kind);
        self.shared
            .lock()
            .watchers
            .iter()
            .filter(|(r, tx)| *r == res && !tx.is_closed())
            .count()
    }
}

/// Build a real kube `Client` from a kubeconfig file (as written by [`FakeApiServer::kubeconfig`]).
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("load kubeconfig");
    kube::Client::try_from(config).expect("build kube client")
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    reserve(addr)?.listen(1024)
}

/// A socket bound to `addr`, not listening yet.
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Binds `addr`, retrying while it is taken for up to `patience`.
async fn bind_within(addr: SocketAddr, patience: Duration) -> TcpListener {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match bind(addr) {
            Ok(listener) => return listener,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("fake apiserver: cannot bind {addr}: {e}"),
        }
    }
}

/// Accept loop. Every connection runs in `conns`, so aborting this task (dropping the JoinSet) cuts them all.
async fn serve(listener: TcpListener, router: Router) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        conns.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

//! Proves that `tests/support/fake_apiserver.rs` speaks the API server protocol well enough for the real
//! `kube` client and `kube::runtime` (watcher, reflector, event recorder). Independent of the gpushare crate.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use fake_apiserver::{client_from_kubeconfig, FakeApiServer};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Event as CoreEvent, Node, ObjectReference},
};
use kube::{
    api::{ListParams, PostParams},
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef},
        watcher, WatchStreamExt,
    },
    Api, ResourceExt,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);
const OUTAGE_DEADLINE: Duration = Duration::from_secs(30);

async fn setup() -> (FakeApiServer, tempfile::TempDir, kube::Client) {
    let srv = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = srv.kubeconfig(dir.path());
    let client = client_from_kubeconfig(&path).await;
    (srv, dir, client)
}

/// Poll `cond` every 20 ms until it holds; panic after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}}
    })
}

fn configmap(ns: &str, name: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"policy.yaml": policy}
    })
}

/// Spawn a reflector over all nodes; returns the reader and the task (abort it at the end).
fn node_reflector(client: kube::Client) -> (reflector::Store<Node>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store::<Node>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    (reader, task)
}

fn label(reader: &reflector::Store<Node>, name: &str, key: &str) -> Option<String> {
    reader
        .get(&ObjectRef::new(name))
        .and_then(|n| n.labels().get(key).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_syncs_nodes_and_follows_changes() {
    let (srv, _dir, client) = setup().await;
    srv.apply(node("node-a", json!({"gpus": "1"})));
    srv.apply(node("node-b", json!({"gpus": "2"})));

    let (reader, task) = node_reflector(client);
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .expect("initial sync")
        .unwrap();
    eventually("two nodes in the store", DEADLINE, || {
        reader.state().len() == 2
    })
    .await;
    assert_eq!(label(&reader, "node-b", "gpus").as_deref(), Some("2"));

    srv.apply(node("node-c", json!({})));
    eventually("node-c added", DEADLINE, || {
        reader.get(&ObjectRef::new("node-c")).is_some()
    })
    .await;

    srv.apply(node("node-a", json!({"gpus": "2"})));
    eventually("node-a label modified", DEADLINE, || {
        label(&reader, "node-a", "gpus").as_deref() == Some("2")
    })
    .await;

    assert!(srv.delete("Node", None, "node-b").is_some());
    eventually("node-b deleted", DEADLINE, || {
        reader.get(&ObjectRef::new("node-b")).is_none()
    })
    .await;
    assert_eq!(reader.state().len(), 2);

    // The objects the client saw carry the fake's bookkeeping.
    let a = reader.get(&ObjectRef::new("node-a")).unwrap();
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    // After the three namespaces every cluster starts with.
    assert_eq!(a.resource_version().unwrap().parse::<u64>().unwrap(), 7);

    // What kube-runtime's watcher actually sent: a paged list, then a watch from the list's revision.
    let reqs = srv.requests();
    let first_list = reqs
        .iter()
        .find(|r| r.path == "/api/v1/nodes" && !r.is_watch())
        .unwrap();
    assert_eq!(first_list.query_param("limit").as_deref(), Some("500"));
    let first_watch = reqs
        .iter()
        .find(|r| r.path == "/api/v1/nodes" && r.is_watch())
        .unwrap();
    assert_eq!(
        first_watch.query_param("resourceVersion").as_deref(),
        Some("5")
    );
    assert_eq!(
        first_watch.query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        first_watch.query_param("timeoutSeconds").as_deref(),
        Some("290")
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selected_configmap_watcher_sees_create_update_delete() {
    let (srv, _dir, client) = setup().await;
    // Decoys: another name in the namespace, the same name in another namespace.
    srv.apply(configmap("gpushare-system", "other", "x"));
    srv.apply(configmap("default", "gpushare-policy", "decoy"));

    let api = Api::<ConfigMap>::namespaced(client.clone(), "gpushare-system");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stream = watcher(
        api.clone(),
        watcher::Config::default().fields("metadata.name=gpushare-policy"),
    )
    .default_backoff();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let entry = match ev {
                    Ok(watcher::Event::Init) => "init".to_string(),
                    Ok(watcher::Event::InitApply(cm)) => format!("initapply:{}", cm.name_any()),
                    Ok(watcher::Event::InitDone) => "initdone".to_string(),
                    Ok(watcher::Event::Apply(cm)) => format!(
                        "apply:{}/{}:{}",
                        cm.namespace().unwrap_or_default(),
                        cm.name_any(),
                        cm.data
                            .unwrap_or_default()
                            .get("policy.yaml")
                            .cloned()
                            .unwrap_or_default()
                    ),
                    Ok(watcher::Event::Delete(cm)) => {
                        format!(
                            "delete:{}/{}",
                            cm.namespace().unwrap_or_default(),
                            cm.name_any()
                        )
                    }
                    Err(e) => format!("error:{e}"),
                };
                log.lock().unwrap().push(entry);
            }
        })
    };
    let has = |s: &str| {
        let log = log.clone();
        let s = s.to_string();
        move || log.lock().unwrap().contains(&s)
    };

    eventually("initial list done", DEADLINE, has("initdone")).await;
    assert!(api.get_opt("gpushare-policy").await.unwrap().is_none());
    match api.get("gpushare-policy").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected 404, got {other:?}"),
    }

    srv.apply(configmap("gpushare-system", "gpushare-policy", "v1"));
    eventually(
        "create seen",
        DEADLINE,
        has("apply:gpushare-system/gpushare-policy:v1"),
    )
    .await;
    assert_eq!(
        api.get("gpushare-policy").await.unwrap().data.unwrap()["policy.yaml"],
        "v1"
    );

    srv.apply(configmap("gpushare-system", "gpushare-policy", "v2"));
    eventually(
        "update seen",
        DEADLINE,
        has("apply:gpushare-system/gpushare-policy:v2"),
    )
    .await;

    srv.apply(configmap("gpushare-system", "other", "changed"));
    srv.apply(configmap("default", "gpushare-policy", "decoy-changed"));
    srv.delete("ConfigMap", Some("gpushare-system"), "gpushare-policy")
        .unwrap();
    eventually(
        "delete seen",
        DEADLINE,
        has("delete:gpushare-system/gpushare-policy"),
    )
    .await;

    // Events arrive in revision order, so the decoy changes (committed before the delete) would be here.
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter()
            .all(|e| !e.contains("other") && !e.contains("decoy") && !e.starts_with("error")),
        "unexpected entries: {log:?}"
    );
    let watch = srv
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/gpushare-system/configmaps" && r.is_watch())
        .unwrap();
    assert_eq!(
        watch.query_param("fieldSelector").as_deref(),
        Some("metadata.name=gpushare-policy")
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_from_outage_and_compaction_by_relisting() {
    let (srv, _dir, client) = setup().await;
    srv.apply(node("node-1", json!({})));
    srv.apply(node("node-2", json!({})));

    let (reader, task) = node_reflector(client);
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .expect("initial sync")
        .unwrap();
    eventually("two nodes", DEADLINE, || reader.state().len() == 2).await;
    eventually("watch established", DEADLINE, || {
        srv.active_watches("Node") == 1
    })
    .await;

    // Outage: every connection is cut. Changes happen meanwhile and history is compacted.
    let addr = srv.addr();
    srv.stop().await;
    assert!(!srv.is_running());
    srv.apply(node("node-3", json!({"during": "outage"})));
    srv.delete("Node", None, "node-2").unwrap();
    srv.compact();
    let compacted_at = srv.resource_version();
    srv.clear_requests();
    srv.start_on(addr).await;
    assert_eq!(srv.addr(), addr);

    eventually("store relisted after the outage", OUTAGE_DEADLINE, || {
        reader.get(&ObjectRef::new("node-3")).is_some()
            && reader.get(&ObjectRef::new("node-2")).is_none()
    })
    .await;
    assert_eq!(reader.state().len(), 2);

    // The client resumed the watch from its old revision, got ERROR 410, and relisted.
    let reqs = srv.requests();
    let stale_watch = reqs
        .iter()
        .position(|r| {
            r.path == "/api/v1/nodes"
                && r.is_watch()
                && r.query_param("resourceVersion")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v < compacted_at)
        })
        .unwrap_or_else(|| panic!("no stale watch after restart: {reqs:?}"));
    assert!(
        reqs[stale_watch..]
            .iter()
            .any(|r| r.path == "/api/v1/nodes" && !r.is_watch()),
        "no relist after the stale watch: {reqs:?}"
    );

    // And it keeps following live changes.
    srv.apply(node("node-4", json!({})));
    eventually("live event after recovery", DEADLINE, || {
        reader.get(&ObjectRef::new("node-4")).is_some()
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_are_recorded() {
    let (srv, _dir, client) = setup().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "gpushare".into(),
            instance: Some("gpushare-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some("gpushare-policy".into()),
        namespace: Some("gpushare-system".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidPolicy".into(),
        note: Some("policy.yaml: unknown key foo".into()),
        action: "LoadPolicy".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();

    let events = srv.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["kind"], "Event");
    assert_eq!(e["metadata"]["namespace"], "gpushare-system");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "InvalidPolicy");
    assert_eq!(e["note"], "policy.yaml: unknown key foo");
    assert_eq!(e["action"], "LoadPolicy");
    assert_eq!(e["reportingController"], "gpushare");
    assert_eq!(e["regarding"]["name"], "gpushare-policy");
    assert_eq!(e["regarding"]["kind"], "ConfigMap");

    // A repeat of the same event is a PATCH growing the series, as kube's Recorder does it.
    recorder.publish(&ev, &reference).await.unwrap();
    let events = srv.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(
        srv.request_count("/apis/events.k8s.io/v1/namespaces/gpushare-system/events"),
        2
    );

    // The core v1 events API is recorded too.
    let core: Api<CoreEvent> = Api::namespaced(client, "gpushare-system");
    let created = core
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "gpushare-policy.1", "namespace": "gpushare-system"},
                "involvedObject": {"kind": "ConfigMap", "name": "gpushare-policy", "namespace": "gpushare-system"},
                "reason": "PolicyLoaded", "message": "ok", "type": "Normal"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(created.metadata.resource_version.is_some());
    let events = srv.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["apiVersion"], "v1");
    assert_eq!(events[1]["reason"], "PolicyLoaded");
    assert_eq!(
        srv.request_count("/api/v1/namespaces/gpushare-system/events"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_gets_selectors_pagination_and_errors() {
    let (srv, _dir, client) = setup().await;
    for (ns, name, app) in [
        ("ml", "a", "infer"),
        ("ml", "b", "infer"),
        ("ml", "c", "train"),
        ("other", "d", "infer"),
    ] {
        srv.apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }));
    }
    let ml: Api<Deployment> = Api::namespaced(client.clone(), "ml");
    let all: Api<Deployment> = Api::all(client.clone());

    let list = ml.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Three namespaces, then three Deployments.
    assert_eq!(list.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(list.types.kind, "DeploymentList");

    let infer = all
        .list(&ListParams::default().labels("app=infer"))
        .await
        .unwrap();
    assert_eq!(infer.items.len(), 3);
    let set = all
        .list(&ListParams::default().labels("app in (train),app!=infer"))
        .await
        .unwrap();
    assert_eq!(
        set.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(),
        ["c"]
    );
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(
        by_ns.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(),
        ["d"]
    );

    // Pagination with limit/continue.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = all.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|d| d.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "d"]);

    // A continue token from before a compaction is 410 Expired.
    let page = all.list(&ListParams::default().limit(1)).await.unwrap();
    srv.apply(node("bump", json!({})));
    srv.compact();
    let err = all
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 410),
        "{err:?}"
    );

    let got = ml.get("a").await.unwrap();
    assert_eq!(got.metadata.generation, Some(1));
    assert_eq!(got.metadata.namespace.as_deref(), Some("ml"));

    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(nodes.get("bump").await.unwrap().name_any(), "bump");
    assert_eq!(
        nodes.list(&ListParams::default()).await.unwrap().types.kind,
        "NodeList"
    );

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    // Unknown path: 404 Status JSON.
    let resp = reqwest::get(format!("{}/apis/nope/v1/things", srv.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 404);

    // Injected failures reach the client as API errors.
    srv.fail_requests("/apis/apps/v1/namespaces/ml/deployments", 500);
    let err = ml.get("a").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500),
        "{err:?}"
    );
    srv.clear_failures();
    assert!(ml.get("a").await.is_ok());

    // The kube 5 client retries 503 by itself (its default RetryPolicy::server_retry layer).
    let item = "/apis/apps/v1/namespaces/ml/deployments/a";
    let before = srv.request_count(item);
    srv.fail_next_requests(item, 503, 2);
    assert!(ml.get("a").await.is_ok());
    assert_eq!(srv.request_count(item), before + 3);
    assert!(srv.request_count("/apis/apps/v1") >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watch_selector_transitions_bookmarks_timeout_and_streaming_lists() {
    use kube::api::{WatchEvent, WatchParams};
    let (srv, _dir, client) = setup().await;
    srv.set_bookmark_interval(Duration::from_millis(200));
    srv.apply(node("gpu-1", json!({"gpu": "yes"})));
    srv.apply(node("cpu-1", json!({})));
    let nodes: Api<Node> = Api::all(client.clone());

    // From resourceVersion "0": synthetic ADDED for the matching state; label transitions become
    // ADDED/DELETED; periodic bookmarks; the server ends the stream after timeoutSeconds.
    let started = Instant::now();
    let wp = WatchParams::default().labels("gpu=yes").timeout(3);
    let stream = nodes.watch(&wp, "0").await.unwrap();
    futures::pin_mut!(stream);
    srv.apply(node("cpu-1", json!({"gpu": "yes"})));
    srv.apply(node("cpu-1", json!({"gpu": "no"})));
    let mut seen = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            WatchEvent::Added(n) => seen.push(format!("ADDED {}", n.name_any())),
            WatchEvent::Modified(n) => seen.push(format!("MODIFIED {}", n.name_any())),
            WatchEvent::Deleted(n) => seen.push(format!("DELETED {}", n.name_any())),
            WatchEvent::Bookmark(_) => seen.push("BOOKMARK".into()),
            WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "stream ended early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "timeoutSeconds not honoured: {elapsed:?}"
    );
    let changes: Vec<&String> = seen.iter().filter(|s| *s != "BOOKMARK").collect();
    assert_eq!(
        changes,
        ["ADDED gpu-1", "ADDED cpu-1", "DELETED cpu-1"],
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|s| *s == "BOOKMARK").count() >= 3,
        "{seen:?}"
    );

    // A watch from a compacted revision: HTTP 200 with one ERROR event, code 410.
    let old = srv.resource_version() - 1;
    srv.compact();
    let stream = nodes
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap();
    futures::pin_mut!(stream);
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(stream.next().await.is_none());

    // Streaming lists (sendInitialEvents + initial-events-end bookmark) also sync a reflector.
    let (reader, writer) = reflector::store::<Node>();
    let cfg = watcher::Config::default().streaming_lists();
    let stream = reflector::reflector(writer, watcher(nodes, cfg)).default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .expect("streaming list sync")
        .unwrap();
    assert_eq!(reader.state().len(), 2);
    srv.apply(node("gpu-2", json!({})));
    eventually("gpu-2 via streaming-list watcher", DEADLINE, || {
        reader.get(&ObjectRef::new("gpu-2")).is_some()
    })
    .await;
    let initial = srv
        .requests()
        .into_iter()
        .find(|r| r.query_param("sendInitialEvents").is_some())
        .unwrap();
    assert_eq!(
        initial.query_param("resourceVersionMatch").as_deref(),
        Some("NotOlderThan")
    );
    task.abort();
}

//! `?watch=true`: newline-delimited watch events, replayed from history after a resourceVersion, then live;
//! bookmarks, `timeoutSeconds`, and the 410 ERROR event for compacted history.

use super::*;

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, StatusCode},
    response::Response,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub(crate) struct WatchStream {
    pub(crate) res: usize,
    pub(crate) filter: Filter,
    pub(crate) rx: mpsc::UnboundedReceiver<Arc<Change>>,
    pub(crate) pending: VecDeque<Bytes>,
    pub(crate) bookmarks: bool,
    pub(crate) tick: tokio::time::Interval,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) seen_rv: u64,
    pub(crate) done: bool,
}

/// One event line, `type` first as the real API server writes it (a client may stream the object
/// only once it knows the type), serialized without a copy of the object.
pub(crate) fn line(typ: &str, obj: &Value) -> Bytes {
    let mut v = format!("{{\"type\":\"{typ}\",\"object\":").into_bytes();
    serde_json::to_writer(&mut v, obj).unwrap();
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

pub(crate) fn bookmark(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let def = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

impl WatchStream {
    /// Translate a store change into this watcher's event, honouring selector transitions.
    pub(crate) fn render(&self, c: &Change) -> Option<Bytes> {
        if c.res != self.res {
            return None;
        }
        let now = self.filter.matches(&c.obj);
        match c.typ {
            ChangeType::Added => now.then(|| line("ADDED", &c.obj)),
            ChangeType::Deleted => now.then(|| line("DELETED", &c.obj)),
            ChangeType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.filter.matches(o));
                match (before, now) {
                    (true, true) => Some(line("MODIFIED", &c.obj)),
                    (false, true) => Some(line("ADDED", &c.obj)),
                    (true, false) => Some(line("DELETED", &c.obj)),
                    (false, false) => None,
                }
            }
        }
    }

    pub(crate) async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                change = self.rx.recv() => match change {
                    Some(c) => {
                        self.seen_rv = c.rv;
                        if let Some(b) = self.render(&c) {
                            self.pending.push_back(b);
                        }
                    }
                    None => self.done = true,
                },
                _ = self.tick.tick(), if self.bookmarks => {
                    self.pending.push_back(bookmark(self.res, self.seen_rv, false));
                }
            }
        }
    }
}

pub(crate) fn start_watch(
    shared: &Shared,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(ns, q)?;
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let send_initial = q
        .get("sendInitialEvents")
        .is_some_and(|b| b == "true" || b == "1");
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::new(400, "BadRequest", "invalid timeoutSeconds"))?,
        ),
        None => Duration::from_secs(1800),
    };
    let from = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && v.as_str() != "0");
    let from = from.map(|v| parse_rv(v)).transpose()?;

    let mut s = shared.lock();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut ws = WatchStream {
        res,
        filter,
        rx,
        pending: VecDeque::new(),
        bookmarks,
        tick: {
            let period = s.bookmark_interval.max(Duration::from_millis(10));
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        },
        deadline: tokio::time::Instant::now() + timeout,
        seen_rv: s.rv,
        done: false,
    };
    match from {
        Some(rv) if !send_initial && rv < s.compacted => {
            // The real API server answers 200 and sends one ERROR event (a watch cannot fail with 410).
            let err = expired(rv, s.compacted);
            ws.pending.push_back(line("ERROR", &err.status()));
            ws.done = true;
        }
        Some(rv) if !send_initial => {
            for c in s.history.iter().filter(|c| c.rv > rv) {
                if let Some(b) = ws.render(c) {
                    ws.pending.push_back(b);
                }
            }
            if bookmarks {
                ws.pending.push_back(bookmark(res, s.rv, false));
            }
        }
        _ => {
            // Unset or "0" (or a streaming list): synthetic ADDED for the current state.
            for ((r, _, _), obj) in s.objects.iter() {
                if *r == res && ws.filter.matches(obj) {
                    ws.pending.push_back(line("ADDED", obj));
                }
            }
            if send_initial {
                ws.pending.push_back(bookmark(res, s.rv, true));
            } else if bookmarks {
                ws.pending.push_back(bookmark(res, s.rv, false));
            }
        }
    }
    if !ws.done {
        s.watchers.push((res, tx));
    }
    drop(s);
    let stream = futures::stream::unfold(ws, WatchStream::next_chunk);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap())
}

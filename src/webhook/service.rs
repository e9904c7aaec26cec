//! The admission service: body in, AdmissionReview out. It routes kinds and operations, calls the
//! backend's decision, and records metrics and one log line per admission. No HTTP types here.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use crate::core::decision::{self, Operation, Request};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::verdict::{Outcome, Verdict};
use crate::core::workload::{Deployment, JsonObject};
use crate::webhook::admission::{
    self, AdmissionRequest, BadReview, GroupVersionKind, ReviewResponse,
};
use crate::webhook::metrics::{Decision, Metrics, RequestLabels};

/// Where decisions are made: a fixed policy and node (standalone) or the cluster's live caches.
pub trait Backend: Send + Sync {
    /// Decides one request; unless `dry_run`, an allowed module is recorded so that concurrent
    /// admissions cannot double-book its GPU.
    fn admit(&self, request: &Request<'_>, dry_run: bool) -> Verdict;
    /// Whether every cache this backend reads has synced once.
    fn ready(&self) -> bool;
}

/// Standalone mode: one policy, one implicit node, capacity checked per request.
pub struct StaticBackend {
    pub policy: Policy,
    pub inventory: Inventory,
}

impl Backend for StaticBackend {
    fn admit(&self, request: &Request<'_>, _dry_run: bool) -> Verdict {
        decision::decide(request, &self.policy, &self.inventory)
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Standalone `serve`: a `StaticBackend` whose policy can be swapped when its file changes.
pub struct StandaloneBackend {
    current: std::sync::RwLock<Arc<StaticBackend>>,
}

impl StandaloneBackend {
    pub fn new(policy: Policy, inventory: Inventory) -> StandaloneBackend {
        StandaloneBackend {
            current: std::sync::RwLock::new(Arc::new(StaticBackend { policy, inventory })),
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let inventory = current.inventory.clone();
        *current = Arc::new(StaticBackend { policy, inventory });
    }

    fn current(&self) -> Arc<StaticBackend> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Backend for StandaloneBackend {
    fn admit(&self, request: &Request<'_>, dry_run: bool) -> Verdict {
        self.current().admit(request, dry_run)
    }

    fn ready(&self) -> bool {
        true
    }
}

pub struct AdmissionService {
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
}

fn parse_deployment(kind: &str, raw: &RawValue) -> Result<Deployment, BadReview> {
    serde_json::from_str::<JsonObject<Deployment>>(raw.get())
        .map(|object| object.0)
        .map_err(|e| BadReview::Object {
            kind: kind.into(),
            error: e.to_string(),
        })
}

fn is_deployment(kind: &GroupVersionKind) -> bool {
    kind.group == "apps" && kind.kind == "Deployment"
}

impl AdmissionService {
    /// Answers one body: `Ok` with the serialized AdmissionReview, or `Err` for HTTP 400.
    pub fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let started = Instant::now();
        let result = self.review_inner(body);
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(response) => Ok(serde_json::to_vec(&response).expect("responses serialize")),
            Err(error) => {
                self.metrics.bad_requests.inc();
                tracing::warn!(%error, "rejected a malformed admission request");
                Err(error)
            }
        }
    }

    fn review_inner(&self, body: &[u8]) -> Result<ReviewResponse, BadReview> {
        let started = Instant::now();
        // One pass: the objects are read as Deployments while the envelope is parsed. Requests
        // that do not read that way (other kinds, broken objects, broken bodies) take the raw path,
        // which gives them their own answers.
        if let Ok(request) = admission::parse::<JsonObject<Deployment>>(body) {
            let object = request.object.as_ref().map(|o| &o.0);
            let old_object = request.old_object.as_ref().map(|o| &o.0);
            return self.answer(&request, object, old_object, started);
        }
        let request = admission::parse::<&RawValue>(body)?;
        let (mut object, mut old_object) = (None, None);
        if is_deployment(&request.kind) && matches!(request.operation.as_str(), "CREATE" | "UPDATE")
        {
            let kind = &request.kind.kind;
            object = admission::present(request.object)
                .map(|raw| parse_deployment(kind, raw))
                .transpose()?;
            old_object = admission::present(request.old_object)
                .map(|raw| parse_deployment(kind, raw))
                .transpose()?;
        }
        self.answer(&request, object.as_ref(), old_object.as_ref(), started)
    }

    fn answer<O>(
        &self,
        request: &AdmissionRequest<O>,
        object: Option<&Deployment>,
        old_object: Option<&Deployment>,
        started: Instant,
    ) -> Result<ReviewResponse, BadReview> {
        let operation = match request.operation.as_str() {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            other => {
                self.count(operation_label(other), Decision::skipped, "operation");
                return Ok(ReviewResponse::allow(&request.uid));
            }
        };
        if !is_deployment(&request.kind) {
            self.count(
                operation_label(&request.operation),
                Decision::skipped,
                "kind",
            );
            return Ok(ReviewResponse::allow(&request.uid));
        }
        let object = object.ok_or_else(|| BadReview::NoObject(request.operation.clone()))?;
        let namespace = request
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(Some(object.metadata.namespace.as_str()).filter(|n| !n.is_empty()))
            .unwrap_or("default");
        let name = request
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(Some(object.metadata.name.as_str()).filter(|n| !n.is_empty()))
            .unwrap_or(object.metadata.generate_name.as_str());
        let decision_request = Request {
            operation,
            namespace,
            name,
            object,
            old_object,
        };
        let dry_run = request.dry_run.unwrap_or(false);
        let verdict = self.backend.admit(&decision_request, dry_run);
        self.record(&request.uid, &decision_request, dry_run, &verdict, started);
        Ok(ReviewResponse::new(&request.uid, &verdict))
    }

    fn count(&self, operation: &'static str, decision: Decision, reason: &'static str) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                operation,
                decision,
                reason,
            })
            .inc();
    }

    fn record(
        &self,
        uid: &str,
        request: &Request<'_>,
        dry_run: bool,
        verdict: &Verdict,
        started: Instant,
    ) {
        let operation = match request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        };
        let (namespace, name) = (request.namespace, request.name);
        let latency_us = started.elapsed().as_micros() as u64;
        match verdict {
            Verdict::Allowed(m) => {
                let (decision, reason) = match &m.outcome {
                    Outcome::Excluded => (Decision::allowed, "excluded_namespace"),
                    Outcome::Unmanaged => (Decision::allowed, "unmanaged"),
                    Outcome::Released => (Decision::patched, "released"),
                    Outcome::Assigned(_) if m.patch.is_empty() => (Decision::allowed, "assigned"),
                    Outcome::Assigned(_) => (Decision::patched, "assigned"),
                };
                self.count(operation, decision, reason);
                // Field values are only built when the log line is enabled: the summary stays off the hot path.
                let assignment = match &m.outcome {
                    Outcome::Assigned(a) => Some(a),
                    _ => None,
                };
                tracing::info!(
                    uid = %uid, object = %format_args!("{namespace}/{name}"), operation, dry_run,
                    decision = "allowed", reason, assignment = assignment.map(|a| a.summary()),
                    warnings = m.warnings.len(), latency_us,
                    "admission"
                );
            }
            Verdict::Denied(d) => {
                self.count(operation, Decision::denied, d.rule.as_str());
                tracing::info!(
                    uid = %uid, object = %format_args!("{namespace}/{name}"), operation, dry_run,
                    decision = "denied", reason = d.rule.as_str(), message = %d.message, latency_us,
                    "admission"
                );
            }
        }
    }
}

fn operation_label(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "OTHER",
    }
}

//! The admission service: body in, AdmissionReview out. It routes kinds and operations, builds
//! the kind-neutral workload view, calls the backend's decision, and records metrics and one log
//! line per admission. No HTTP types here.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use crate::core::decision::{Operation, Request};
use crate::core::verdict::{Outcome, Verdict};
use crate::core::workload::{JsonObject, Kind, RawObject, Workload, WorkloadKey};
use crate::webhook::admission::{
    self, AdmissionRequest, BadReview, GroupVersionKind, ReviewResponse,
};
pub use crate::webhook::backend::{Backend, StandaloneBackend};
use crate::webhook::metrics::{Decision, Metrics, RequestLabels};

pub struct AdmissionService {
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<Metrics>,
}

fn parse_object(kind: Kind, raw: &RawValue) -> Result<RawObject, BadReview> {
    serde_json::from_str::<JsonObject<RawObject>>(raw.get())
        .map(|object| object.0)
        .map_err(|e| BadReview::Object {
            kind: kind.as_str().into(),
            error: e.to_string(),
        })
}

/// The kind whose replicas an UPDATE of `<resource>/scale` changes (CONTRACT section 2a).
fn scaled_kind(request: &AdmissionRequest<()>) -> Option<Kind> {
    if request.sub_resource.as_deref() != Some("scale")
        || request.operation != "UPDATE"
        || request.resource.group != "apps"
    {
        return None;
    }
    [Kind::Deployment, Kind::ReplicaSet, Kind::StatefulSet]
        .into_iter()
        .find(|kind| kind.plural() == request.resource.resource)
}

fn kind_of(gvk: &GroupVersionKind) -> Option<Kind> {
    Kind::from_group_kind(&gvk.group, &gvk.kind)
}

impl AdmissionService {
    /// Answers one body: `Ok` with the serialized AdmissionReview, or `Err` for HTTP 400.
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let started = Instant::now();
        let result = self.review_inner(body, started).await;
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.metrics.bad_requests.inc();
            tracing::warn!(%error, "rejected a malformed admission request");
        }
        result
    }

    /// The serialized answer; it is written where the verdict it borrows from still lives.
    async fn review_inner(&self, body: &[u8], started: Instant) -> Result<Vec<u8>, BadReview> {
        // One pass: the objects are read into the wire view of every kind while the envelope is
        // parsed. Requests that do not read that way (foreign kinds of another shape, broken
        // objects, broken bodies) take the raw path, which gives them their own answers.
        // The objects are boxed so the envelope stays small as serde moves it along (two inline
        // objects made it 2 KiB, and copying it showed in profiles).
        if let Ok(request) = admission::parse::<Box<JsonObject<RawObject>>>(body) {
            let (envelope, object, old_object) = request.split();
            return self
                .answer(
                    &envelope,
                    object.map(|o| o.0),
                    old_object.map(|o| o.0),
                    started,
                )
                .await;
        }
        let request = admission::parse::<&RawValue>(body)?;
        let (mut object, mut old_object) = (None, None);
        if let (Some(kind), "CREATE" | "UPDATE") =
            (kind_of(&request.kind), request.operation.as_str())
        {
            object = admission::present(request.object)
                .map(|raw| parse_object(kind, raw))
                .transpose()?;
            old_object = admission::present(request.old_object)
                .map(|raw| parse_object(kind, raw))
                .transpose()?;
        }
        let (envelope, _, _) = request.split();
        self.answer(&envelope, object, old_object, started).await
    }

    async fn answer(
        &self,
        request: &AdmissionRequest<()>,
        object: Option<RawObject>,
        old_object: Option<RawObject>,
        started: Instant,
    ) -> Result<Vec<u8>, BadReview> {
        if let Some(kind) = scaled_kind(request) {
            return Ok(self.answer_scale(request, kind, object, started).await);
        }
        let kind = kind_of(&request.kind);
        let kind_label = kind.map_or("other", Kind::as_str);
        let operation = match (request.operation.as_str(), request.sub_resource.as_deref()) {
            ("CREATE", None) => Operation::Create,
            ("UPDATE", None) => Operation::Update,
            // `kubectl debug`: the Pod with its new ephemeral containers.
            ("UPDATE", Some("ephemeralcontainers")) if kind == Some(Kind::Pod) => {
                Operation::EphemeralContainers
            }
            (other, _) => {
                self.count(
                    operation_label(other),
                    kind_label,
                    Decision::skipped,
                    "operation",
                );
                return Ok(ReviewResponse::allow(&request.uid).to_json());
            }
        };
        let Some(kind) = kind else {
            self.count(
                operation_label(&request.operation),
                kind_label,
                Decision::skipped,
                "kind",
            );
            return Ok(ReviewResponse::allow(&request.uid).to_json());
        };
        let object = object.ok_or_else(|| BadReview::NoObject(request.operation.clone()))?;
        let mut workload = Workload::from_raw(kind, object);
        // The envelope names the object better than the object itself: a generateName'd object
        // has no name yet, and a namespace may be left to the request's.
        if let Some(namespace) = request.namespace.as_deref().filter(|n| !n.is_empty()) {
            if *workload.key.namespace != *namespace {
                workload.key.namespace = namespace.into();
            }
        }
        if let Some(name) = request.name.as_deref().filter(|n| !n.is_empty()) {
            if *workload.key.name != *name {
                workload.key.name = name.into();
            }
        }
        let old_workload = old_object.map(|old| {
            let mut old = Workload::from_raw(kind, old);
            old.key = workload.key.clone();
            old
        });
        let decision_request = Request {
            operation,
            object: &workload,
            old_object: old_workload.as_ref(),
        };
        let dry_run = request.dry_run.unwrap_or(false);
        let verdict = self.backend.admit(&decision_request, dry_run).await;
        self.record(&request.uid, &decision_request, dry_run, &verdict, started);
        Ok(ReviewResponse::new(&request.uid, &verdict).to_json())
    }

    /// `kubectl scale` and autoscalers: an UPDATE of the scale subresource, whose object is an
    /// `autoscaling/v1` Scale with the new `spec.replicas`.
    async fn answer_scale(
        &self,
        request: &AdmissionRequest<()>,
        kind: Kind,
        scale: Option<RawObject>,
        started: Instant,
    ) -> Vec<u8> {
        let namespace = request.namespace.as_deref().unwrap_or_default();
        let name = request.name.as_deref().unwrap_or_default();
        let key = WorkloadKey::new(kind, namespace, name);
        let replicas = scale
            .and_then(|s| s.spec.replicas)
            .unwrap_or(1)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let dry_run = request.dry_run.unwrap_or(false);
        let verdict = self.backend.scale(&key, replicas, dry_run).await;
        let (decision, outcome) = match &verdict {
            Verdict::Allowed(m) if matches!(m.outcome, Outcome::Assigned(_)) => {
                (Decision::allowed, "scaled")
            }
            Verdict::Allowed(_) => (Decision::allowed, "unmanaged"),
            Verdict::Denied(d) => (Decision::denied, d.rule.as_str()),
        };
        self.count("UPDATE", kind.as_str(), decision, outcome);
        tracing::info!(
            uid = %request.uid, object = %key, operation = "UPDATE", subresource = "scale", replicas, dry_run,
            decision = ?decision, reason = outcome, denial = match &verdict { Verdict::Denied(d) => Some(d.message.as_str()), _ => None },
            latency_us = started.elapsed().as_micros() as u64,
            "admission"
        );
        ReviewResponse::new(&request.uid, &verdict).to_json()
    }

    fn count(
        &self,
        operation: &'static str,
        kind: &'static str,
        decision: Decision,
        reason: &'static str,
    ) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                operation,
                kind,
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
        let operation = request.operation.as_str();
        let key = request.key();
        let kind = key.kind.as_str();
        let latency_us = started.elapsed().as_micros() as u64;
        match verdict {
            Verdict::Allowed(m) => {
                let (decision, reason) = match &m.outcome {
                    Outcome::Excluded => (Decision::allowed, "excluded_namespace"),
                    Outcome::Controlled(_) => (Decision::skipped, "controlled"),
                    Outcome::Finished => (Decision::allowed, "finished"),
                    Outcome::Unmanaged => (Decision::allowed, "unmanaged"),
                    Outcome::Released => (Decision::patched, "released"),
                    Outcome::Assigned(_) if m.patch.is_empty() => (Decision::allowed, "assigned"),
                    Outcome::Assigned(_) => (Decision::patched, "assigned"),
                };
                self.count(operation, kind, decision, reason);
                // Field values are only built when the log line is enabled: the summary stays off the hot path.
                let assigned = match &m.outcome {
                    Outcome::Assigned(claim) => Some(&claim.assigned),
                    _ => None,
                };
                tracing::info!(
                    uid = %uid, object = %key, operation, dry_run,
                    decision = "allowed", reason, assignment = assigned.map(tracing::field::display),
                    warnings = m.warnings.len(), latency_us,
                    "admission"
                );
            }
            Verdict::Denied(d) => {
                self.count(operation, kind, Decision::denied, d.rule.as_str());
                tracing::info!(
                    uid = %uid, object = %key, operation, dry_run,
                    decision = "denied", reason = d.rule.as_str(), denial = %d.message, latency_us,
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

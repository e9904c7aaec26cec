//! The ledger: the commitments admitted but not yet seen stored, recorded in the API server
//! (CONTRACT section 6a).
//!
//! What a stored workload holds is recorded on the workload itself (its `gpushare.io/assigned-*`
//! annotations and pods count), and every replica reads it from its watch caches. The ledger covers
//! only the gap between an admission's answer and the stored object reaching the caches: one
//! ConfigMap (`gpushare-system/gpushare-ledger`) with an entry per commitment in flight (key
//! `<Kind>.<namespace>.<name>`, value the claim as compact JSON with the time it was written).
//! Admissions write it with a resourceVersion precondition (see `commit`), so two replicas can
//! never both commit the last share of a GPU; `reconcile` removes an entry once the stored
//! workload shows it, or after `GRACE` when it never does. The ConfigMap therefore holds what is
//! in flight, never one entry per workload: its size and the cost of a commit do not grow with
//! the number of managed workloads, as Kubernetes' ResourceQuota keeps totals, not objects.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::claim::{Assigned, Claim, ClaimChange, Share};
use crate::core::domain::{GpuIndex, Mode, Percentage};
use crate::core::inventory::Placement;
use crate::core::pods::{PodCount, Surge};
use crate::core::workload::{Kind, Labels, WorkloadKey};

/// How long an entry is trusted before the stored workloads must show it: the time between an
/// admission's answer and the watch event of the stored object, with room for a busy API server.
/// Commitments of workloads that were never stored are freed after this plus one reconcile period.
pub const GRACE: Duration = Duration::from_secs(5);

/// How often each replica reconciles the ledger with its caches: entries stored workloads now
/// show leave it this often, which bounds its size by the admissions of about this long.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(1);

/// One commitment, and when (Unix milliseconds, the writer's clock) it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub claim: Claim,
    pub written_ms: u64,
}

/// The ledger as last read from (or written to) the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// `None` while the ConfigMap does not exist.
    pub resource_version: Option<String>,
    pub entries: HashMap<WorkloadKey, Entry>,
    /// Keys of entries gpushare cannot read (edited by hand): never trusted, removed by the
    /// housekeeping.
    pub unreadable: Vec<String>,
}

/// The ConfigMap key of a workload. Kinds have no dots and namespaces are DNS labels, so the
/// first two dots separate the parts even when a name has dots of its own.
pub fn entry_key(key: &WorkloadKey) -> String {
    format!("{}.{}.{}", key.kind, key.namespace, key.name)
}

pub fn parse_entry_key(text: &str) -> Option<WorkloadKey> {
    let (kind, rest) = text.split_once('.')?;
    let (namespace, name) = rest.split_once('.')?;
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    (!namespace.is_empty() && !name.is_empty()).then(|| WorkloadKey::new(kind, namespace, name))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    gpu: u32,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percentage: Option<u64>,
    /// Replicas (or parallelism); the rollout's surge is kept apart so a scale resolves it again.
    pods: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    surge_pods: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    surge_percent: u32,
    containers: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    extra_percentage: u32,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    node_selector: Labels,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    node_name: String,
    written_ms: u64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

pub fn encode_entry(entry: &Entry) -> String {
    let claim = &entry.claim;
    let wire = Wire {
        gpu: claim.gpu().0,
        mode: claim.mode().as_str().to_string(),
        percentage: claim
            .assigned
            .share
            .percentage()
            .map(|p| u64::from(p.get())),
        pods: claim.pods.replicas,
        surge_pods: match claim.pods.surge {
            Surge::Pods(n) => n,
            _ => 0,
        },
        surge_percent: match claim.pods.surge {
            Surge::Percent(p) => p,
            _ => 0,
        },
        containers: claim.containers,
        extra_percentage: claim.extra_percentage,
        node_selector: claim.placement.node_selector.clone(),
        node_name: claim.placement.node_name.clone(),
        written_ms: entry.written_ms,
    };
    serde_json::to_string(&wire).expect("entries serialize")
}

pub fn decode_entry(key: WorkloadKey, text: &str) -> Option<Entry> {
    let wire: Wire = serde_json::from_str(text).ok()?;
    let share = match Mode::parse(&wire.mode)? {
        Mode::TimeSlicing => Share::TimeSlicing,
        Mode::Mps => Share::Mps(Percentage::new(wire.percentage?)?),
    };
    Some(Entry {
        claim: Claim {
            key,
            placement: Placement {
                node_selector: wire.node_selector,
                node_name: wire.node_name,
            },
            assigned: Assigned {
                gpu: GpuIndex(wire.gpu),
                share,
            },
            pods: PodCount {
                replicas: wire.pods,
                surge: match (wire.surge_pods, wire.surge_percent) {
                    (0, 0) => Surge::None,
                    (0, p) => Surge::Percent(p),
                    (n, _) => Surge::Pods(n),
                },
            },
            containers: wire.containers,
            extra_percentage: wire.extra_percentage,
        },
        written_ms: wire.written_ms,
    })
}

impl Ledger {
    /// Reads the ConfigMap. An entry gpushare cannot read (edited by hand) is skipped with a log
    /// line: the reconciler rewrites it from the stored workload.
    pub fn from_configmap(cm: &ConfigMap) -> Ledger {
        let mut entries = HashMap::new();
        let mut unreadable = Vec::new();
        for (text_key, value) in cm.data.iter().flatten() {
            let entry = parse_entry_key(text_key)
                .and_then(|key| decode_entry(key.clone(), value).map(|e| (key, e)));
            match entry {
                Some((key, entry)) => {
                    entries.insert(key, entry);
                }
                None => unreadable.push(text_key.clone()),
            }
        }
        unreadable.sort();
        Ledger {
            resource_version: cm.metadata.resource_version.clone(),
            entries,
            unreadable,
        }
    }

    /// Whether `other` is a later state of the same ConfigMap. Resource versions are etcd
    /// revisions; an unparsable one is taken as newer, so a reading is never stuck.
    pub fn is_older_than(&self, other: &Ledger) -> bool {
        match (&self.resource_version, &other.resource_version) {
            (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) => a < b,
                _ => a != b,
            },
            (None, _) => true,
            (Some(_), None) => false,
        }
    }
}

/// The `data` of a JSON merge patch that makes `changes` (a freed workload's entry is removed:
/// `null`).
pub fn patch_data(changes: &[ClaimChange], written_ms: u64) -> Map<String, Value> {
    changes
        .iter()
        .map(|change| {
            let value = match change {
                ClaimChange::Hold(claim) => Value::String(encode_entry(&Entry {
                    claim: claim.clone(),
                    written_ms,
                })),
                ClaimChange::Free(_) => Value::Null,
            };
            (entry_key(change.key()), value)
        })
        .collect()
}

/// How long a replica holds back its commits after reading the ledger other than through its
/// watch (a relist, or a read after the watch fell behind): entries may have come and gone
/// unseen, and the stored workloads they stood for get this long to reach its caches. Through
/// the watch it sees every entry, so an entry can leave as soon as its stored workload shows it.
pub const RELIST_HOLD: Duration = Duration::from_secs(2);

/// The entries the ledger no longer needs (`stored`: the claim a cached workload holds): those
/// at least `min_age` old that a stored workload shows, and those older than `GRACE` (never
/// stored, deleted since, or stored otherwise: the stored object counts from then on). Nothing is
/// ever added here.
pub fn reconcile<'a>(
    ledger: &Ledger,
    stored: impl Fn(&WorkloadKey) -> Option<&'a Claim>,
    now_ms: u64,
    min_age: Duration,
) -> Vec<ClaimChange> {
    let old_enough =
        |entry: &Entry| now_ms.saturating_sub(entry.written_ms) >= min_age.as_millis() as u64;
    let mut keys: Vec<WorkloadKey> = ledger
        .entries
        .iter()
        .filter(|(key, entry)| {
            (stored(key) == Some(&entry.claim) && old_enough(entry)) || is_expired(entry, now_ms)
        })
        .map(|(key, _)| key.clone())
        .collect();
    keys.sort();
    keys.into_iter().map(ClaimChange::Free).collect()
}

/// Now, in Unix milliseconds: how entries are timed (the writer's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether an entry is past the time its workload should have reached every cache.
/// One written in the future (a hand edit, or a clock far off) is never trusted either: it would
/// never expire.
pub fn is_expired(entry: &Entry, now_ms: u64) -> bool {
    let grace = GRACE.as_millis() as u64;
    now_ms.saturating_sub(entry.written_ms) >= grace || entry.written_ms > now_ms + grace
}

/// The `data` of a merge patch that removes entries by their raw keys (unreadable ones).
pub fn removal_data(keys: &[String]) -> Map<String, Value> {
    keys.iter().map(|key| (key.clone(), Value::Null)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, gpu: u32, pods: u32, percentage: u64) -> Claim {
        Claim {
            key: WorkloadKey::new(Kind::Deployment, "ns", name),
            placement: Placement {
                node_selector: [("kubernetes.io/hostname", "edge")].into_iter().collect(),
                node_name: String::new(),
            },
            assigned: Assigned {
                gpu: GpuIndex(gpu),
                share: Share::Mps(Percentage::new(percentage).unwrap()),
            },
            pods: PodCount {
                replicas: pods,
                surge: Surge::Percent(25),
            },
            containers: 1,
            extra_percentage: 0,
        }
    }

    fn ledger(entries: &[(Claim, u64)]) -> Ledger {
        Ledger {
            unreadable: Vec::new(),
            resource_version: Some("7".into()),
            entries: entries
                .iter()
                .map(|(c, at)| {
                    (
                        c.key.clone(),
                        Entry {
                            claim: c.clone(),
                            written_ms: *at,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn entries_round_trip_through_the_configmap_encoding() {
        let job = Claim {
            key: WorkloadKey::new(Kind::Job, "batch", "cuda.sample-1"),
            placement: Placement::default(),
            assigned: Assigned {
                gpu: GpuIndex(1),
                share: Share::TimeSlicing,
            },
            pods: PodCount::fixed(2),
            containers: 3,
            extra_percentage: 20,
        };
        for claim in [claim("a", 0, 3, 20), job] {
            let entry = Entry {
                claim: claim.clone(),
                written_ms: 1_764_650_000_123,
            };
            let key = parse_entry_key(&entry_key(&claim.key)).unwrap();
            assert_eq!(key, claim.key);
            assert_eq!(decode_entry(key, &encode_entry(&entry)), Some(entry));
        }
        assert_eq!(parse_entry_key("Gizmo.ns.x"), None);
        assert_eq!(parse_entry_key("Deployment.ns"), None);
        assert!(decode_entry(claim("a", 0, 1, 1).key, "{\"gpu\":0}").is_none());
    }

    #[test]
    fn an_entry_the_stored_workloads_do_not_show_is_freed_after_the_grace_period() {
        let unstored = claim("unstored", 0, 1, 60);
        let ledger = ledger(&[(unstored.clone(), 10_000)]);
        let stored: HashMap<WorkloadKey, Claim> = HashMap::new();
        assert!(
            reconcile(&ledger, |k| stored.get(k), 10_000 + 4_999, Duration::ZERO).is_empty(),
            "still in grace"
        );
        assert_eq!(
            reconcile(&ledger, |k| stored.get(k), 10_000 + 5_000, Duration::ZERO),
            vec![ClaimChange::Free(unstored.key)]
        );
    }

    #[test]
    fn an_entry_leaves_once_the_stored_workload_shows_it_and_nothing_is_ever_added() {
        let shown = claim("shown", 0, 1, 20);
        let pending = claim("pending", 0, 2, 20);
        let stale = claim("pending", 0, 1, 20);
        let only_stored = claim("only-stored", 1, 1, 10);
        let ledger = ledger(&[(shown.clone(), 9_000), (pending.clone(), 9_000)]);
        let stored: HashMap<_, _> = [&shown, &stale, &only_stored]
            .into_iter()
            .map(|c| (c.key.clone(), c.clone()))
            .collect();
        assert!(
            reconcile(&ledger, |k| stored.get(k), 9_500, RECONCILE_PERIOD).is_empty(),
            "the housekeeping leaves a young entry to the next commit"
        );
        assert_eq!(
            reconcile(&ledger, |k| stored.get(k), 10_000, RECONCILE_PERIOD),
            vec![ClaimChange::Free(shown.key.clone())]
        );
        assert_eq!(
            reconcile(&ledger, |k| stored.get(k), 9_000, Duration::ZERO),
            vec![ClaimChange::Free(shown.key.clone())],
            "the shown entry leaves; the pending one waits for its stored object; no stored claim is copied in"
        );
        assert_eq!(
            reconcile(&ledger, |k| stored.get(k), 60_000, Duration::ZERO).len(),
            2,
            "after GRACE the stored object counts, whatever it shows"
        );
    }

    #[test]
    fn a_fresh_entry_wins_over_a_stale_stored_object() {
        // An UPDATE moved the workload to GPU 1; the cache still shows GPU 0.
        let moved = claim("m", 1, 1, 20);
        let ledger = ledger(&[(moved, 9_000)]);
        let stored: HashMap<_, _> = [(claim("m", 0, 1, 20).key, claim("m", 0, 1, 20))].into();
        assert!(reconcile(&ledger, |k| stored.get(k), 10_000, Duration::ZERO).is_empty());
    }

    #[test]
    fn a_freed_entry_is_removed_by_the_patch() {
        let a = claim("a", 0, 1, 20);
        let data = patch_data(&[ClaimChange::Free(a.key.clone())], 0);
        assert_eq!(data.get("Deployment.ns.a"), Some(&Value::Null));
        let data = patch_data(&[ClaimChange::Hold(a.clone())], 7);
        let written = decode_entry(a.key.clone(), data["Deployment.ns.a"].as_str().unwrap());
        assert_eq!(written.map(|e| (e.claim, e.written_ms)), Some((a, 7)));
    }

    #[test]
    fn entries_edited_into_nonsense_are_never_trusted() {
        let cm = ConfigMap {
            data: Some(
                [
                    (
                        "Deployment.ns.a".to_string(),
                        "{\"gpu\": \"lots\"}".to_string(),
                    ),
                    ("Gizmo.ns.b".to_string(), "{}".to_string()),
                ]
                .into(),
            ),
            ..ConfigMap::default()
        };
        let ledger = Ledger::from_configmap(&cm);
        assert!(ledger.entries.is_empty());
        assert_eq!(ledger.unreadable, ["Deployment.ns.a", "Gizmo.ns.b"]);
        let future = Entry {
            claim: claim("f", 0, 1, 100),
            written_ms: 10_000_000,
        };
        assert!(is_expired(&future, 1_000_000), "written far in the future");
        let data = removal_data(&ledger.unreadable);
        assert_eq!(data.get("Gizmo.ns.b"), Some(&Value::Null));
    }

    #[test]
    fn newer_resource_versions_compare_as_revisions() {
        let at = |rv: &str| Ledger {
            resource_version: Some(rv.into()),
            ..Ledger::default()
        };
        assert!(at("9").is_older_than(&at("10")));
        assert!(!at("10").is_older_than(&at("9")));
        assert!(Ledger::default().is_older_than(&at("1")));
    }
}

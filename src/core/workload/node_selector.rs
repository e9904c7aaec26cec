//! A pod template's nodeSelector as a claim keeps it: a sorted boxed slice. A claim lives in
//! several places of the cluster cache (the stored object, what it counts as, the ledger entry),
//! and a `BTreeMap` of one label allocates a whole node of eleven slots, ten times the label.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct NodeSelector(Box<[(Box<str>, Box<str>)]>);

impl NodeSelector {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&BTreeMap<String, String>> for NodeSelector {
    fn from(map: &BTreeMap<String, String>) -> NodeSelector {
        // Already sorted and unique.
        NodeSelector(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for NodeSelector {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> NodeSelector {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        NodeSelector::from(&map)
    }
}

impl fmt::Debug for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object of labels, as in a pod spec and a ledger entry.
impl Serialize for NodeSelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for NodeSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NodeSelector, D::Error> {
        Ok(NodeSelector::from(
            &BTreeMap::<String, String>::deserialize(d)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_map_it_came_from() {
        let selector: NodeSelector = [("pool", "a"), ("kubernetes.io/hostname", "edge")]
            .into_iter()
            .collect();
        assert_eq!(selector.get("pool"), Some("a"));
        assert_eq!(selector.get("kubernetes.io/hostname"), Some("edge"));
        assert_eq!(selector.get("zone"), None);
        assert_eq!(
            selector.iter().collect::<Vec<_>>(),
            [("kubernetes.io/hostname", "edge"), ("pool", "a")]
        );
        let json = serde_json::to_string(&selector).unwrap();
        assert_eq!(json, r#"{"kubernetes.io/hostname":"edge","pool":"a"}"#);
        assert_eq!(
            serde_json::from_str::<NodeSelector>(&json).unwrap(),
            selector
        );
        assert!(NodeSelector::default().is_empty());
    }
}

//! A set of labels as the cluster cache keeps them (a node's labels, a claim's nodeSelector): a
//! sorted boxed slice. The cache holds one per node and one per claim, and a `BTreeMap` of one
//! label allocates a whole node of eleven slots, ten times the label.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
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

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Labels {
        // Already sorted and unique.
        Labels(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        Labels::from(&map)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Labels {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Labels::from(&map)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object of labels, as in a pod spec and a ledger entry.
impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        Ok(Labels::from(&BTreeMap::<String, String>::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_map_it_came_from() {
        let selector: Labels = [("pool", "a"), ("kubernetes.io/hostname", "edge")]
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
        assert_eq!(serde_json::from_str::<Labels>(&json).unwrap(), selector);
        assert!(Labels::default().is_empty());
    }
}

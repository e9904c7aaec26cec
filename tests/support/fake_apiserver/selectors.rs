//! `fieldSelector`, `labelSelector` and namespace filtering, as the API server applies them to lists and
//! watches.

use super::*;

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug)]
pub(crate) enum FieldReq {
    Eq(String, String),
    NotEq(String, String),
}

#[derive(Debug)]
pub(crate) enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) fields: Vec<FieldReq>,
    pub(crate) labels: Vec<LabelReq>,
}

pub(crate) fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

pub(crate) fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    split_top_level(s)
        .into_iter()
        .map(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                Ok(FieldReq::NotEq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                Ok(FieldReq::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                Ok(FieldReq::Eq(k.trim().into(), v.trim().into()))
            } else {
                Err(format!("invalid field selector term {term:?}"))
            }
        })
        .collect()
}

pub(crate) fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("invalid set {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

pub(crate) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    split_top_level(s)
        .into_iter()
        .map(|term| {
            if let Some(k) = term.strip_prefix('!') {
                Ok(LabelReq::NotExists(k.trim().into()))
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Ok(LabelReq::NotIn(k.trim().into(), parse_set(rest)?))
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Ok(LabelReq::In(k.trim().into(), parse_set(rest)?))
            } else if let Some((k, v)) = term.split_once("!=") {
                Ok(LabelReq::NotEq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                Ok(LabelReq::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                Ok(LabelReq::Eq(k.trim().into(), v.trim().into()))
            } else {
                Ok(LabelReq::Exists(term.trim().into()))
            }
        })
        .collect()
}

pub(crate) fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Filter {
    pub(crate) fn from_query(
        namespace: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let fields = match q.get("fieldSelector") {
            Some(s) => parse_field_selector(s).map_err(|e| ApiError::new(400, "BadRequest", e))?,
            None => Vec::new(),
        };
        let labels = match q.get("labelSelector") {
            Some(s) => parse_label_selector(s).map_err(|e| ApiError::new(400, "BadRequest", e))?,
            None => Vec::new(),
        };
        Ok(Filter {
            namespace,
            fields,
            labels,
        })
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj["metadata"]["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        let fields_ok = self.fields.iter().all(|f| match f {
            FieldReq::Eq(k, v) => field_value(obj, k) == *v,
            FieldReq::NotEq(k, v) => field_value(obj, k) != *v,
        });
        if !fields_ok {
            return false;
        }
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str().map(str::to_string);
        self.labels.iter().all(|l| match l {
            LabelReq::Eq(k, v) => label(k).as_deref() == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k).as_deref() != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|x| vs.contains(&x)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|x| !vs.contains(&x)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

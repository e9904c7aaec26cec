//! Generators of bytes and text: reviews with bytes flipped, deleted, inserted or cut off, and
//! YAML-ish policy and manifest text.

use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::reviews::{values, ANY_TEXT};

/// Flips, deletes, inserts or cuts off bytes.
pub fn mutate(mut body: Vec<u8>, edits: &[(u8, Index, u8)]) -> Vec<u8> {
    for (what, at, byte) in edits {
        let len = body.len();
        match what % 4 {
            0 if len > 0 => body[at.index(len)] ^= byte | 1,
            1 if len > 0 => {
                body.remove(at.index(len));
            }
            2 => body.insert(at.index(len + 1), *byte),
            3 if len > 0 => body.truncate(at.index(len)),
            _ => {}
        }
    }
    body
}

#[rustfmt::skip]
pub const POLICY_KEYS: &[&str] = &["defaultMode", "defaultGpu", "defaultMpsPercentage",
    "maxMpsPercentagePerGpu", "maxClientsPerGpu", "strategy", "hideGpuFromOtherContainers", "mps",
    "hostIPC", "pipeDirectory", "gpusPerNode", "gpuModes", "reservedForVms", "nodes", "edge-1",
    "gpus", "namespaces", "exclude", "enforcement", "\"1\"", "0", "typo"];
#[rustfmt::skip]
pub const POLICY_VALUES: &[&str] = &["", "mps", "time-slicing", "auto", "\"1\"", "0", "1", "-1", "50",
    "101", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "4294967296",
    "1e3", "0x10", "0o7", ".inf", "-.inf", ".nan", "null", "~", "true", "yes", "pack", "warn",
    "{ \"1\": mps }", "{ 1: mps, 1: time-slicing }", "{ 4294967296: mps }", "{ -1: mps }",
    "[1, 1]", "[-1]", "[99999999999]", "[ \" 1 \" ]",
    "{ edge-1: { gpus: 2, gpuModes: { 0: mps }, reservedForVms: [1] } }", "{ a: { gpus: -1 } }",
    "{ a: ~ }", "{ hostIPC: true, pipeDirectory: /run/nvidia/mps }", "/run/nvidia/mps",
    "relative/dir", "&a 1", "*a", "!!str 1", "!!binary aGk=", "!custom x", "[kube-system]",
    "{ exclude: ~ }", "|\n  block", "'quoted'"];
#[rustfmt::skip]
pub const MANIFEST_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "name", "namespace",
    "annotations", "gpushare.io/gpu", "items", "spec", "template", "containers", "replicas"];
#[rustfmt::skip]
pub const MANIFEST_VALUES: &[&str] = &["apps/v1", "Deployment", "List", "DeploymentList", "v1", "web",
    "\"0\"", "[]", "~", "{}", "[ { kind: List, items: [ { kind: List } ] } ]",
    "{ name: web, annotations: { gpushare.io/gpu: \"0,1\" } }", "&x { a: [*x] }", "*x",
    "!!binary aGk=", "!tag v", "3", "1.5", ".nan", "{ 1: a }", "{ [a]: b }", "{ ? a }"];
#[rustfmt::skip]
const YAML_LINES: &[&str] = &["---", "...", "- 1", "-", "? [a]", ": b", "{", "[", "]",
    "%YAML 1.2", "&a", "*a", "#", "\t"];

/// YAML-ish text: `key: value` lines at random depths, YAML syntax, any text, deep nesting.
pub fn yaml_text(
    keys: &'static [&'static str],
    vals: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        6 => (0usize..3, select(keys), values((vals, vals), ANY_TEXT))
            .prop_map(|(depth, k, v)| format!("{}{k}: {v}", "  ".repeat(depth))),
        2 => select(YAML_LINES).prop_map(str::to_string),
        1 => "\\PC{0,30}",
    ];
    prop_oneof![
        8 => prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n")),
        1 => "\\PC{0,200}",
        1 => (select(&["[", "{", "- ", "a: "][..]), 1usize..300).prop_map(|(s, n)| s.repeat(n)),
    ]
}

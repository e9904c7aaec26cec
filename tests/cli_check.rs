//! `gpushare check`, the offline CI validator, run as a real process on the files under
//! `tests/fixtures/` (CONTRACT section 6): verdict lines, exit codes, input forms and `-o yaml`.

mod common;
#[path = "cli_check/kinds.rs"]
mod kinds;

use common::*;
use serde::Deserialize as _;
use serde_json::Value;

/// What one `gpushare check` run produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The verdict lines on stderr (with `-o yaml`), without indented warnings.
    fn stderr_verdicts(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| {
                ["ALLOWED ", "DENIED ", "SKIPPED "]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .collect()
    }
}

fn check_with(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let output = run_with_deadline(gpushare().arg("check").args(args), stdin);
    Run {
        code: output.status.code().expect("check exits, it is not killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: strip_ansi(&String::from_utf8_lossy(&output.stderr)),
    }
}

fn check(args: &[&str]) -> Run {
    check_with(args, None)
}

fn fixture(name: &str) -> String {
    fixture_path(name).to_str().expect("UTF-8 path").to_string()
}

fn mps_policy() -> String {
    fixture("policy-gpu1-mps.yaml")
}

#[test]
fn all_allowed_exits_0_with_one_line_per_deployment() {
    let run = check(&[
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        &fixture("check-allowed.yaml"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.lines();
    // The Service and the ConfigMap get no line; the namespace defaults to `default`.
    assert_eq!(lines.len(), 3, "{run:?}");
    assert_eq!(
        lines[0],
        "ALLOWED vision/Deployment/inference gpu=1 mode=mps 20%"
    );
    assert!(
        lines[1].starts_with("ALLOWED default/Deployment/web "),
        "{run:?}"
    );
    assert!(lines[1].contains("gpu=0"), "{run:?}");
    assert!(lines[1].contains("mode=time-slicing"), "{run:?}");
    assert!(
        lines[2].starts_with("ALLOWED default/Deployment/plain"),
        "{run:?}"
    );
    assert!(
        !lines[2].contains("gpu="),
        "an unmanaged Deployment gets no GPU: {run:?}"
    );
}

#[test]
fn any_denied_exits_1_with_the_reason() {
    let run = check(&[&fixture("check-denied.yaml")]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with("ALLOWED default/Deployment/ok gpu=0"),
        "{run:?}"
    );
    let reason = lines[1]
        .strip_prefix("DENIED default/Deployment/multi: ")
        .unwrap_or_else(|| panic!("a DENIED line with a reason: {run:?}"));
    assert!(
        reason.contains(GPU),
        "the reason names the annotation: {reason}"
    );
}

#[test]
fn a_missing_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yaml");
    let run = check(&[missing.to_str().expect("UTF-8 path")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("absent.yaml"), "{run:?}");
    assert!(run.lines().is_empty(), "{run:?}");
}

#[test]
fn input_that_is_not_kubernetes_objects_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory cannot be read as a file.
    let run = check(&[dir.path().to_str().expect("UTF-8 path")]);
    assert_eq!(run.code, 2, "{run:?}");
    // A document that is a plain string, not an object.
    let scalar = dir.path().join("notes.yaml");
    std::fs::write(&scalar, "just some text\n").expect("write");
    let run = check(&[scalar.to_str().expect("UTF-8 path")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("notes.yaml"), "{run:?}");
}

#[test]
fn a_yaml_syntax_error_exits_2_naming_the_file_and_line() {
    let run = check(&[&fixture("check-broken.yaml")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("check-broken.yaml"), "{run:?}");
    // The bad indentation is on line 13 of the file (in its second document).
    assert!(run.stderr.contains("line 13"), "{run:?}");
}

#[test]
fn an_invalid_policy_exits_2() {
    let run = check(&[
        "--policy",
        &fixture("policy-invalid.yaml"),
        &fixture("check-allowed.yaml"),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("policy-invalid.yaml"), "{run:?}");
    assert!(run.stderr.contains("gpuMode"), "{run:?}");
    assert!(
        run.lines().is_empty(),
        "no verdicts under an invalid policy: {run:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let no_files = check(&[]);
    assert_eq!(no_files.code, 2, "{no_files:?}");
    let unknown_flag = check(&["--no-such-flag", &fixture("check-allowed.yaml")]);
    assert_eq!(unknown_flag.code, 2, "{unknown_flag:?}");
    assert!(
        unknown_flag.stderr.contains("--no-such-flag"),
        "{unknown_flag:?}"
    );
    let bad_output = check(&["-o", "xml", &fixture("check-allowed.yaml")]);
    assert_eq!(bad_output.code, 2, "{bad_output:?}");
}

#[test]
fn json_input_and_kind_list_are_unpacked() {
    let json = check(&["--gpus", "2", &fixture("check-list.json")]);
    assert_eq!(json.code, 0, "{json:?}");
    let lines = json.lines();
    assert_eq!(
        lines.len(),
        2,
        "the Service in the List gets no line: {json:?}"
    );
    assert!(
        lines[0].starts_with("ALLOWED default/Deployment/json-web gpu=0"),
        "{json:?}"
    );
    // `auto` across documents: GPU 0 already has a client, so least-loaded picks GPU 1.
    assert!(
        lines[1].starts_with("ALLOWED ml/Deployment/json-multi gpu=1"),
        "{json:?}"
    );

    let yaml = check(&["--gpus", "2", &fixture("check-list.yaml")]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert_eq!(yaml.lines().len(), 1, "{yaml:?}");
    assert!(
        yaml.lines()[0].starts_with("ALLOWED team/Deployment/listed gpu=1"),
        "{yaml:?}"
    );
}

#[test]
fn standard_input_is_read_with_a_dash() {
    let text = fixture_text("check-denied.yaml");
    let from_stdin = check_with(&["-"], Some(text.as_bytes()));
    let from_file = check(&[&fixture("check-denied.yaml")]);
    assert_eq!(from_stdin.code, 1, "{from_stdin:?}");
    assert_eq!(from_stdin.lines(), from_file.lines());

    // `-` next to a file: capacity and verdicts over both together.
    let capacity_b = fixture_text("check-capacity-b.yaml");
    let mixed = check_with(
        &[
            "--policy",
            &mps_policy(),
            &fixture("check-capacity-a.yaml"),
            "-",
        ],
        Some(capacity_b.as_bytes()),
    );
    assert_eq!(mixed.code, 1, "{mixed:?}");
    assert_eq!(mixed.lines().len(), 2, "{mixed:?}");
    assert!(
        mixed.lines()[1].starts_with("DENIED edge/Deployment/detect-b: "),
        "{mixed:?}"
    );
}

#[test]
fn capacity_is_counted_across_documents_and_files() {
    let run = check(&[
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        &fixture("check-capacity.yaml"),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert_eq!(
        lines[0],
        "ALLOWED edge/Deployment/detect-a gpu=1 mode=mps 60%"
    );
    assert!(
        lines[1].starts_with("DENIED edge/Deployment/detect-b: "),
        "{run:?}"
    );
    // A denied module takes no capacity: 60% + 40% fits exactly.
    assert_eq!(
        lines[2],
        "ALLOWED edge/Deployment/detect-c gpu=1 mode=mps 40%"
    );

    // The same two modules in two files.
    let run = check(&[
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        &fixture("check-capacity-a.yaml"),
        &fixture("check-capacity-b.yaml"),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert_eq!(
        lines[0],
        "ALLOWED edge/Deployment/detect-a gpu=1 mode=mps 60%"
    );
    let reason = lines[1]
        .strip_prefix("DENIED edge/Deployment/detect-b: ")
        .unwrap_or_else(|| panic!("the second 60% module is denied: {run:?}"));
    assert!(
        reason.contains("100"),
        "the reason names the limit: {reason}"
    );
}

#[test]
fn a_later_document_with_the_same_identity_replaces_the_earlier() {
    let run = check(&["--gpus", "2", &fixture("check-duplicate.yaml")]);
    // The first default/web (gpu "0,1", denied) is replaced by the second (gpu "0").
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with("ALLOWED default/Deployment/web gpu=0"),
        "{run:?}"
    );
    assert!(
        lines[1].starts_with("ALLOWED other/Deployment/web gpu=0"),
        "{run:?}"
    );

    // Across inputs too: a corrected default/multi on stdin replaces the denied one in the file.
    let fixed = fixture_text("check-denied.yaml")
        .split("---")
        .nth(1)
        .expect("the second document")
        .replace(r#"gpushare.io/gpu: "0,1""#, r#"gpushare.io/gpu: "0""#);
    let run = check_with(
        &[&fixture("check-denied.yaml"), "-"],
        Some(fixed.as_bytes()),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.lines().len(), 2, "{run:?}");
    assert!(
        run.lines()
            .iter()
            .any(|l| l.starts_with("ALLOWED default/Deployment/multi gpu=0")),
        "{run:?}"
    );
}

#[test]
fn gpus_1_makes_gpu_1_denied() {
    let two = check(&["--gpus", "2", &fixture("check-gpu1.yaml")]);
    assert_eq!(two.code, 0, "{two:?}");
    assert!(
        two.lines()[0].starts_with("ALLOWED default/Deployment/second-gpu gpu=1"),
        "{two:?}"
    );

    let one = check(&["--gpus", "1", &fixture("check-gpu1.yaml")]);
    assert_eq!(one.code, 1, "{one:?}");
    assert_eq!(one.lines().len(), 1, "{one:?}");
    assert!(
        one.lines()[0].starts_with("DENIED default/Deployment/second-gpu: "),
        "{one:?}"
    );
    assert!(
        one.lines()[0].contains("VM"),
        "the denial mentions GPUs given to VMs: {one:?}"
    );
}

fn parse_stream(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("-o yaml prints valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn output_yaml_prints_every_object_and_round_trips() {
    let input = fixture("check-output.yaml");
    let args = [
        "-o",
        "yaml",
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        &input,
    ];
    let run = check(&args);
    assert_eq!(run.code, 1, "one Deployment is denied: {run:?}");

    let verdicts = run.stderr_verdicts();
    assert_eq!(verdicts.len(), 2, "verdicts go to stderr: {run:?}");
    assert_eq!(
        verdicts[0],
        "ALLOWED vision/Deployment/inference gpu=1 mode=mps 20%"
    );
    assert!(
        verdicts[1].starts_with("DENIED default/Deployment/multi: "),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("ALLOWED ") && !run.stdout.contains("DENIED "),
        "stdout holds only YAML: {run:?}"
    );

    let original = parse_stream(&fixture_text("check-output.yaml"));
    let printed = parse_stream(&run.stdout);
    assert_eq!(printed.len(), 3, "every object is printed: {}", run.stdout);
    assert_eq!(printed[0], original[0], "the Service is unchanged");
    assert_eq!(
        printed[2], original[2],
        "the denied Deployment is unchanged"
    );

    let allowed = &printed[1];
    assert_eq!(
        env(allowed, 0),
        vec![
            (VISIBLE_DEVICES.to_string(), Some("1".to_string())),
            (MPS_THREAD_PERCENTAGE.to_string(), Some("20".to_string())),
            (MPS_MEM_LIMIT.to_string(), Some("0=1G".to_string())),
        ]
    );
    assert_assigned(allowed, "1", "mps", Some("20"));
    // Apart from gpushare's additions, it is the input object.
    let mut stripped = allowed.clone();
    let template = "/spec/template/spec/containers/0";
    stripped
        .pointer_mut(template)
        .and_then(Value::as_object_mut)
        .expect("container")
        .remove("env");
    for metadata in [
        "/metadata/annotations",
        "/spec/template/metadata/annotations",
    ] {
        let map = stripped
            .pointer_mut(metadata)
            .and_then(Value::as_object_mut)
            .expect("annotations");
        for key in [ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE] {
            map.remove(key);
        }
    }
    if stripped["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .is_some_and(|m| m.is_empty())
    {
        stripped["spec"]["template"]["metadata"]
            .as_object_mut()
            .expect("template metadata")
            .remove("annotations");
    }
    assert_eq!(stripped, original[1]);

    // Feeding the output back in gives the same verdicts.
    let dir = tempfile::tempdir().expect("temp dir");
    let printed_file = dir.path().join("mutated.yaml");
    std::fs::write(&printed_file, &run.stdout).expect("write");
    let again = check(&[
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        printed_file.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(again.code, run.code, "{again:?}");
    assert_eq!(again.lines(), verdicts);

    // And through -o yaml again: the mutation is idempotent.
    let mut args_again = args.to_vec();
    let printed_path = printed_file.to_str().expect("UTF-8 path");
    *args_again.last_mut().expect("input") = printed_path;
    let twice = check(&args_again);
    assert_eq!(parse_stream(&twice.stdout), printed);
}

/// `check -o json` on `args`: the exit code and the parsed stdout.
fn check_json(args: &[&str]) -> (Run, Value) {
    let mut with_json = vec!["-o", "json"];
    with_json.extend_from_slice(args);
    let run = check(&with_json);
    let value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("-o json prints one JSON object ({e}): {run:?}"));
    (run, value)
}

#[test]
fn output_json_has_one_entry_per_verdict_line_in_the_same_order() {
    let policy = mps_policy();
    let cases: [(&[&str], i32); 3] = [
        (
            &["--policy", &policy, "--gpus", "2", "check-allowed.yaml"],
            0,
        ),
        (&["check-denied.yaml"], 1),
        (&["--gpus", "2", "check-kinds.yaml"], 1),
    ];
    for (args, code) in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.ends_with(".yaml") {
                    fixture(a)
                } else {
                    a.to_string()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = check(&args);
        let (run, json) = check_json(&args);
        assert_eq!((text.code, run.code), (code, code), "{run:?}");
        let results = json["results"].as_array().expect("results is an array");
        let lines = text.lines();
        assert_eq!(results.len(), lines.len(), "{json:#}\n{text:?}");
        for (result, line) in results.iter().zip(&lines) {
            let object = format!(
                "{}/{}/{}",
                result["namespace"].as_str().expect("namespace"),
                result["kind"].as_str().expect("kind"),
                result["name"].as_str().expect("name")
            );
            let verdict = result["verdict"].as_str().expect("verdict");
            let rest = line
                .strip_prefix(&format!("{verdict} {object}"))
                .unwrap_or_else(|| panic!("{result} is not the line {line:?}"));
            match verdict {
                "DENIED" | "SKIPPED" => {
                    assert_eq!(
                        Some(rest),
                        result["reason"]
                            .as_str()
                            .map(|r| format!(": {r}"))
                            .as_deref()
                    )
                }
                "ALLOWED" => match result["assignment"].as_object() {
                    Some(assignment) => {
                        let mut expected = format!(
                            " gpu={} mode={}",
                            assignment["gpu"].as_u64().expect("gpu is a number"),
                            assignment["mode"].as_str().expect("mode")
                        );
                        if let Some(percentage) = assignment.get("mpsPercentage") {
                            expected.push_str(&format!(" {percentage}%"));
                        }
                        assert_eq!(rest, expected, "{result}");
                    }
                    None => assert!(!rest.contains("gpu="), "{result} vs {line}"),
                },
                other => panic!("unknown verdict {other}"),
            }
        }
    }
}

#[test]
fn output_json_names_the_assignment_fields() {
    let (run, json) = check_json(&[
        "--policy",
        &mps_policy(),
        "--gpus",
        "2",
        &fixture("check-allowed.yaml"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        json["results"][0],
        serde_json::json!({
            "verdict": "ALLOWED", "namespace": "vision", "kind": "Deployment", "name": "inference",
            "assignment": {"gpu": 1, "mode": "mps", "mpsPercentage": 20}, "warnings": []
        })
    );
    assert_eq!(json["results"][1]["assignment"]["mode"], "time-slicing");
    assert!(json["results"][1]["assignment"]
        .get("mpsPercentage")
        .is_none());
    assert_eq!(json["results"][2]["assignment"], Value::Null);
}

#[test]
fn output_json_on_unreadable_input_exits_2_with_an_error_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yaml");
    let (run, json) = check_json(&[missing.to_str().expect("UTF-8 path")]);
    assert_eq!(run.code, 2, "{run:?}");
    let error = json["error"].as_str().expect("an error string");
    assert!(error.contains("absent.yaml"), "{json}");
    assert!(run.stderr.contains("absent.yaml"), "{run:?}");

    let (run, json) = check_json(&[
        "--policy",
        &fixture("policy-invalid.yaml"),
        &fixture("check-allowed.yaml"),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(json["error"]
        .as_str()
        .is_some_and(|e| e.contains("policy-invalid.yaml")));
}

//! The Kubernetes release is pinned in one place, the control-plane module of `make cluster`;
//! the API types gpushare compiles against (k8s-openapi's version feature) must follow it.

use std::path::Path;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The control-plane module and the `1.x.y` after `k8s.io/kubernetes v1.` in it, e.g. `36.3`.
fn pinned() -> (String, String) {
    let go_mod = read("tests/tools/controlplane/go.mod");
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v1."))
        .expect("go.mod requires k8s.io/kubernetes v1.x")
        .to_string();
    (go_mod, version)
}

#[test]
fn k8s_openapi_feature_matches_the_pinned_kubernetes_release() {
    let (_, version) = pinned();
    let minor = version.split('.').next().expect("a minor version");

    let cargo = read("Cargo.toml");
    let line = cargo
        .lines()
        .find(|l| l.starts_with("k8s-openapi"))
        .expect("Cargo.toml depends on k8s-openapi");
    assert!(
        line.contains(&format!("\"v1_{minor}\"")),
        "Kubernetes 1.{minor} is pinned in tests/tools/controlplane/go.mod, but Cargo.toml has: {line}"
    );
}

#[test]
fn every_staging_module_is_pinned_to_the_same_release() {
    let (go_mod, version) = pinned();
    let staging = format!("v0.{version}");
    let replaces: Vec<&str> = go_mod.lines().filter(|l| l.contains(" => ")).collect();
    assert!(
        replaces.len() > 20,
        "the staging modules need replace lines"
    );
    for line in replaces {
        assert!(
            line.trim_end().ends_with(&staging),
            "not at {staging}: {line}"
        );
    }
}

/// The other releases of `make cluster KUBE_VERSION=x.y.z` (pin-release.sh): each module under
/// `releases/<x.y.z>/` requires that k8s.io/kubernetes and pins every staging module to `v0.y.z`.
#[test]
fn every_release_module_pins_its_own_release() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/controlplane/releases");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let release = name
            .strip_prefix("1.")
            .unwrap_or_else(|| panic!("releases/{name}: not a release 1.y.z"));
        let go_mod = read(&format!("tests/tools/controlplane/releases/{name}/go.mod"));
        read(&format!("tests/tools/controlplane/releases/{name}/go.sum"));
        assert!(
            go_mod
                .lines()
                .any(|l| l.trim() == format!("k8s.io/kubernetes v{name}")),
            "releases/{name}/go.mod does not require k8s.io/kubernetes v{name}"
        );
        let staging = format!("v0.{release}");
        let replaces: Vec<&str> = go_mod.lines().filter(|l| l.contains(" => ")).collect();
        assert!(
            replaces.len() > 20,
            "releases/{name}: the staging modules need replace lines"
        );
        for line in replaces {
            assert!(
                line.trim_end().ends_with(&staging),
                "releases/{name}: not at {staging}: {line}"
            );
        }
    }
}

//! The allocation page in a real browser: headless Chromium renders the page that
//! `gpushare status -o html` writes and the one `gpushare serve --standalone --status-page` serves at
//! `/status`, and the tests read what it shows from the DOM after rendering. Each keeps a screenshot
//! under `target/test-artifacts/`.
//!
//! Without Chromium the browser tests skip, except in CI (CI=true), where they fail:
//! `tests/tools/install-chromium.sh` installs Debian's `chromium`.

mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture_path, gpushare, run_with_deadline, Server};
use serde_json::json;

/// Chromium starts slowly on two busy cores.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);
const WINDOW: (u32, u32) = (1200, 800);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `$CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on the PATH.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "chromium is required in CI for the status page tests (tests/tools/install-chromium.sh installs it)"
        );
        eprintln!(
            "SKIPPED: chromium not found (install it with tests/tools/install-chromium.sh, or set CHROMIUM)"
        );
    }
    found
}

/// Headless Chromium with a fresh profile, offline but for the page it is given.
struct Browser {
    path: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn new(path: PathBuf) -> Browser {
        Browser {
            path,
            profile: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Runs Chromium on `url` with `args`, killing its whole process group past the deadline.
    fn run(&self, args: &[String], url: &str) -> String {
        let mut command = Command::new(&self.path);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--mute-audio",
                // The test server's certificate comes from a CA made for this test only.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("chromium starts");
        let group = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for chromium") {
                break status;
            }
            if started.elapsed() > BROWSER_DEADLINE {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{group}")])
                    .status();
                let _ = child.wait();
                panic!(
                    "chromium did not finish within {BROWSER_DEADLINE:?} on {url}; stderr:\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (stdout, stderr) = (
            stdout.join().expect("stdout reader"),
            stderr.join().expect("stderr reader"),
        );
        assert!(
            status.success(),
            "chromium exited with {status} on {url}; stderr:\n{stderr}"
        );
        stdout
    }

    /// The DOM after the page has loaded and rendered.
    fn dom(&self, url: &str) -> String {
        let dom = self.run(&["--dump-dom".into()], url);
        assert!(
            dom.contains("</html>"),
            "chromium printed no DOM for {url}:\n{dom}"
        );
        dom
    }

    /// A PNG screenshot of the window, kept under target/test-artifacts/.
    fn screenshot(&self, url: &str, name: &str) -> PathBuf {
        let file = artifacts().join(name);
        let _ = std::fs::remove_file(&file);
        self.run(&[format!("--screenshot={}", file.display())], url);
        let png = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("chromium wrote no screenshot {}: {e}", file.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            file.display()
        );
        let dimension =
            |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(
            (dimension(16), dimension(20)),
            WINDOW,
            "the screenshot has the window's size"
        );
        eprintln!("screenshot: {}", file.display());
        file
    }
}

/// `target/test-artifacts/` (next to cargo's own `target/tmp`).
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

// ---- reading the DOM --------------------------------------------------------------------------

/// An element found in the serialized DOM: its attributes and its inner HTML.
#[derive(Debug)]
struct Element {
    attributes: HashMap<String, String>,
    inner: String,
}

impl Element {
    fn attr(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The inner HTML without tags, entities decoded, whitespace collapsed.
    fn text(&self) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        for c in self.inner.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    text.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        unescape(&text.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// `name="value"` pairs of a start tag's attribute text (as Chromium serializes them).
fn attributes(tag: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_owned();
        let value_start = eq + 2;
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.insert(name, unescape(&rest[value_start..value_start + len]));
        rest = &rest[value_start + len + 1..];
    }
    out
}

/// Every `<tag ...>` element whose start tag contains `marker`, with its inner HTML up to the
/// matching close tag (same-name nesting counted).
fn elements(html: &str, tag: &str, marker: &str) -> Vec<Element> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(start) = html[at..].find(&open).map(|i| at + i) {
        let tag_end = start + html[start..].find('>').expect("a start tag ends");
        let start_tag = &html[start + open.len()..tag_end];
        at = tag_end + 1;
        // `<li` also starts `<link`: only a space (or nothing) may follow the tag name.
        let is_this_tag = start_tag.is_empty() || start_tag.starts_with(char::is_whitespace);
        if !is_this_tag || !start_tag.contains(marker) {
            continue;
        }
        let mut depth = 1;
        let mut cursor = at;
        let inner_end = loop {
            let next_open = html[cursor..].find(&open).map(|i| cursor + i);
            let next_close = cursor
                + html[cursor..]
                    .find(&close)
                    .unwrap_or_else(|| panic!("<{tag}> is closed"));
            match next_open {
                Some(o) if o < next_close => {
                    depth += 1;
                    cursor = o + open.len();
                }
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        break next_close;
                    }
                    cursor = next_close + close.len();
                }
            }
        };
        found.push(Element {
            attributes: attributes(start_tag),
            inner: html[at..inner_end].to_owned(),
        });
    }
    found
}

/// The GPU cards of the page, by (node, GPU index).
fn gpus(dom: &str) -> HashMap<(String, String), Element> {
    elements(dom, "article", "class=\"gpu")
        .into_iter()
        .map(|e| {
            (
                (
                    e.attr("data-node").to_owned(),
                    e.attr("data-gpu").to_owned(),
                ),
                e,
            )
        })
        .collect()
}

/// The meters of a GPU card, by `data-metric`.
fn meters(gpu: &Element) -> HashMap<String, Element> {
    elements(&gpu.inner, "div", "role=\"meter\"")
        .into_iter()
        .map(|e| (e.attr("data-metric").to_owned(), e))
        .collect()
}

/// The width the meter's fill is drawn with.
fn fill_width(meter: &Element) -> String {
    let fill = elements(&meter.inner, "div", "class=\"fill\"");
    assert_eq!(fill.len(), 1, "a meter has one fill: {}", meter.inner);
    fill[0].attr("style").trim().to_owned()
}

/// The modules a GPU card lists, by their `namespace/Kind/name`.
fn modules(gpu: &Element) -> Vec<String> {
    shares(gpu)
        .iter()
        .map(|s| s.attr("data-module").to_string())
        .collect()
}

/// Each module's share of a GPU, as the card lists it.
fn shares(gpu: &Element) -> Vec<Element> {
    elements(&gpu.inner, "li", "class=\"share\"")
}

/// The page loads nothing: no script, stylesheet, image, font, frame or link to elsewhere.
fn assert_self_contained(dom: &str) {
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "<object", "src=", "href=", "url(", "@import",
    ] {
        assert!(
            !dom.contains(forbidden),
            "the page must be self-contained, but its DOM has {forbidden:?}"
        );
    }
}

// ---- the tests --------------------------------------------------------------------------------

#[test]
fn status_html_from_manifests_shows_each_gpu_with_its_bars_and_modules() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("status.html");
    let output = run_with_deadline(
        gpushare()
            .args(["status", "-o", "html", "--gpus", "2", "--policy"])
            .arg(fixture_path("policy-gpu1-mps.yaml"))
            .arg("--from")
            .arg(fixture_path("status-page-modules.yaml")),
        None,
    );
    assert!(
        output.status.success(),
        "status -o html failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&page, &output.stdout).expect("write the page");

    let browser = Browser::new(chromium);
    let url = format!("file://{}", page.display());
    let dom = browser.dom(&url);
    assert!(dom.contains("<title>gpushare: GPU allocation</title>"));
    assert_self_contained(&dom);
    assert!(
        !dom.contains("http-equiv=\"refresh\""),
        "a written page does not reload itself"
    );
    let nodes = elements(&dom, "section", "class=\"node\"");
    assert_eq!(
        nodes.len(),
        1,
        "one node section (the implicit standalone node)"
    );
    assert_eq!(nodes[0].attr("data-node"), "standalone");

    let gpus = gpus(&dom);
    assert_eq!(gpus.len(), 2, "one card per GPU: {:?}", gpus.keys());
    let key = |gpu: &str| ("standalone".to_owned(), gpu.to_owned());

    let gpu0 = &gpus[&key("0")];
    assert_eq!(gpu0.attr("data-mode"), "time-slicing");
    assert_eq!(gpu0.attr("data-reserved"), "false");
    let bars = meters(gpu0);
    assert!(
        !bars.contains_key("mps-percentage"),
        "a time-slicing GPU has no MPS bar"
    );
    let clients = &bars["client-processes"];
    assert_eq!(
        (clients.attr("data-used"), clients.attr("data-limit")),
        ("3", "48")
    );
    assert!(clients.text().contains("3 of 48"), "{}", clients.text());
    assert_eq!(fill_width(clients), "width: 6%");
    assert_eq!(modules(gpu0), ["edge/Deployment/tracker"]);

    let gpu1 = &gpus[&key("1")];
    assert_eq!(gpu1.attr("data-mode"), "mps");
    let bars = meters(gpu1);
    let mps = &bars["mps-percentage"];
    assert_eq!(
        (mps.attr("data-used"), mps.attr("data-limit")),
        ("80", "100")
    );
    assert!(mps.text().contains("80% of 100%"), "{}", mps.text());
    assert_eq!(fill_width(mps), "width: 80%");
    assert!(mps.attr("class").contains("high"), "80% is drawn as high");
    let clients = &bars["client-processes"];
    assert_eq!(
        (clients.attr("data-used"), clients.attr("data-limit")),
        ("3", "48")
    );
    assert_eq!(
        modules(gpu1),
        ["edge/Deployment/classifier", "edge/Deployment/detector"]
    );
    // Each module's share: its pods and percentage, in words and as data.
    for share in shares(gpu1) {
        let (pods, used) = (share.attr("data-pods"), share.attr("data-used"));
        assert!(
            share.text().contains(&format!("{pods} pod"))
                && share.text().contains(&format!("= {used}%")),
            "{}",
            share.text()
        );
        assert_eq!(
            share.attr("data-running"),
            "",
            "offline: running pods are unknown"
        );
    }
    let used: u32 = shares(gpu1)
        .iter()
        .map(|s| s.attr("data-used").parse::<u32>().expect("a number"))
        .sum();
    assert_eq!(
        used, 80,
        "the modules' shares add up to the GPU's committed percentage"
    );

    browser.screenshot(&url, "status-page-from-manifests.png");
}

/// 40 modules on one GPU: every share is listed (in a list that scrolls instead of stretching
/// the card), and the page still renders in the window.
#[test]
fn forty_modules_on_one_gpu_are_each_listed_with_their_share() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests: String = (0..40)
        .map(|i| {
            format!(
                "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: job-{i:02}, namespace: edge, \
                 annotations: {{gpushare.io/gpu: \"1\", gpushare.io/mps-percentage: \"2\"}}}}\n\
                 spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: c}}]}}}}}}\n---\n"
            )
        })
        .collect();
    let file = dir.path().join("forty.yaml");
    std::fs::write(&file, manifests).expect("write manifests");
    let output = run_with_deadline(
        gpushare()
            .args(["status", "-o", "html", "--gpus", "2", "--policy"])
            .arg(fixture_path("policy-gpu1-mps.yaml"))
            .arg("--from")
            .arg(&file),
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = dir.path().join("forty.html");
    std::fs::write(&page, &output.stdout).expect("write the page");
    let browser = Browser::new(chromium);
    let url = format!("file://{}", page.display());
    let dom = browser.dom(&url);
    let gpus = gpus(&dom);
    let gpu1 = &gpus[&("standalone".to_owned(), "1".to_owned())];
    let listed = shares(gpu1);
    assert_eq!(listed.len(), 40, "every module is listed");
    assert!(listed.iter().all(|s| s.attr("data-used") == "2"));
    assert!(
        dom.contains("max-height:420px;overflow-y:auto"),
        "the list scrolls"
    );
    browser.screenshot(&url, "status-page-forty-modules.png");
}

#[tokio::test]
async fn serve_status_page_shows_the_webhooks_view_with_reserved_gpus_marked() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "gpuModes: {\"1\": mps}\nreservedForVms: [1]\n").expect("write policy");
    let server = Server::start(&[
        "--status-page",
        "--policy",
        policy.to_str().expect("UTF-8 temp path"),
    ]);

    let response = server
        .client()
        .get(server.url("/status"))
        .send()
        .await
        .expect("GET /status");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert!(
        header("content-security-policy").starts_with("default-src 'none'"),
        "the served page may load nothing: {}",
        header("content-security-policy")
    );
    assert_eq!(header("cache-control"), "no-store");

    let url = server.url("/status");
    let browser = Browser::new(chromium);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let dom = browser.dom(&url);
            browser.screenshot(&url, "status-page-served.png");
            dom
        }
    })
    .await
    .expect("the browser ran");
    assert_self_contained(&dom);
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the served page reloads itself"
    );
    let gpus = gpus(&dom);
    assert_eq!(gpus.len(), 2, "--gpus 2: {:?}", gpus.keys());
    let gpu0 = &gpus[&("standalone".to_owned(), "0".to_owned())];
    assert_eq!(gpu0.attr("data-reserved"), "false");
    assert!(gpu0.text().contains("no modules"), "{}", gpu0.text());
    assert_eq!(fill_width(&meters(gpu0)["client-processes"]), "width: 0%");
    let gpu1 = &gpus[&("standalone".to_owned(), "1".to_owned())];
    assert_eq!(gpu1.attr("data-mode"), "mps");
    assert_eq!(gpu1.attr("data-reserved"), "true");
    assert!(gpu1.attr("class").contains("reserved"));
    assert!(
        gpu1.text().contains("reserved for VMs"),
        "a reserved GPU says so: {}",
        gpu1.text()
    );
    let mps = &meters(gpu1)["mps-percentage"];
    assert_eq!(
        (mps.attr("data-used"), mps.attr("data-limit")),
        ("0", "100")
    );
}

#[tokio::test]
async fn without_the_flag_there_is_no_status_page_and_it_is_read_only() {
    let server = Server::start(&[]);
    let (status, _) = server.get("/status").await;
    assert_eq!(status, 404, "the status page is opt-in");

    let server = Server::start(&["--status-page"]);
    let response = server
        .client()
        .post(server.url("/status"))
        .body("x")
        .send()
        .await
        .expect("POST /status");
    assert_eq!(response.status(), 405, "the status page is read-only");
    server.assert_healthy().await;
}

#[test]
fn status_html_needs_no_browser_to_be_complete() {
    let output = run_with_deadline(
        gpushare()
            .args(["status", "-o", "html", "--gpus", "2", "--from"])
            .arg(fixture_path("status-page-modules.yaml")),
        None,
    );
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert_self_contained(&page);
    // Without the policy file GPU 1 is time-slicing: the mps modules are denied by check and
    // only the time-slicing module is shown.
    assert!(page.contains("edge/Deployment/tracker"));
}

/// In cluster mode the page shows what the replica's caches hold: here a Deployment admitted
/// through the webhook and stored as the API server would store it, counted on the one GPU node.
#[tokio::test]
async fn in_cluster_mode_the_page_shows_the_cached_modules() {
    let api = fake_apiserver::FakeApiServer::start().await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "labels": {"nvidia.com/gpu.count": "2"}},
        "status": {"allocatable": {"nvidia.com/gpu": "2"}}
    }));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let server =
        tokio::task::spawn_blocking(move || Server::start_cluster(&kubeconfig, &["--status-page"]))
            .await
            .expect("server starts");
    let started = Instant::now();
    while server.get("/readyz").await.0 != 200 {
        assert!(
            started.elapsed() < common::DEADLINE,
            "the webhook never became ready; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut vision = common::web(&[(common::GPU, "0")]);
    vision["metadata"]["name"] = json!("vision");
    vision["metadata"]["namespace"] = json!("default");
    vision["spec"]["replicas"] = json!(2);
    let answer = server
        .review(&common::Review::create(vision.clone()).to_json())
        .await;
    assert!(answer.allowed, "the module is admitted");
    api.apply(answer.apply(&vision));

    let page = loop {
        let (status, page) = server.get("/status").await;
        assert_eq!(status, 200);
        if page.contains("vision") {
            break page;
        }
        assert!(
            started.elapsed() < common::DEADLINE,
            "the page never showed the admitted Deployment:\n{page}\nlog:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("cluster"),
        "the page says where its numbers come from"
    );
    let gpus = gpus(&page);
    let gpu0 = &gpus[&("edge-1".to_owned(), "0".to_owned())];
    assert!(
        modules(gpu0).iter().any(|m| m.contains("vision")),
        "{:?}",
        modules(gpu0)
    );
    let clients = &meters(gpu0)["client-processes"];
    assert_eq!(
        clients.attr("data-used"),
        "3",
        "(2 replicas + the default rollout's surge pod) x 1 container"
    );
    let gpu1 = &gpus[&("edge-1".to_owned(), "1".to_owned())];
    assert!(modules(gpu1).is_empty());
}

//! The subcommands, wired from the parsed command line to the core and the shells.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::apply::ApplyError;
use crate::cli::args::{
    ApplyArgs, CertsArgs, CheckArgs, CheckOutput, LogFormat, ServeArgs, StatusArgs, StatusOutput,
};
use crate::cli::log_buffer;
use crate::cli::policy_file::{self, read_policy};
use crate::cli::{check, check_json, kubeconfig};
use crate::core::inventory::Inventory;
use crate::core::policy::Policy;
use crate::core::status::{self, RunningPods};
use crate::webhook::metrics::Metrics;
use crate::webhook::server::{self, AppState, Limits};
use crate::webhook::service::{AdmissionService, Backend, StandaloneBackend};
use crate::webhook::status_page::{self, StatusSource};
use crate::webhook::tls::{self, ReloadingCert};

/// Exit codes of `check` and `apply` (and usage errors, which clap reports with 2 as well);
/// `apply` also exits 1 when the API server refuses an object.
pub const EXIT_DENIED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// How long `status` may take to read the cluster.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a `--policy` file is checked for changes.
const POLICY_FILE_POLL: Duration = Duration::from_secs(1);

/// Logs go to stderr in batches (see `log_buffer`): a request never waits on a write to the
/// container runtime's pipe. Keep the returned guard until exit: dropping it writes what is
/// pending.
pub fn init_logging(format: LogFormat) -> log_buffer::Flusher<std::io::Stderr> {
    let (writer, guard) = log_buffer::start(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(crate::cli::log_format::use_colour(format));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

fn policy_or_default(path: Option<&Path>) -> anyhow::Result<Policy> {
    path.map(read_policy)
        .transpose()
        .map(Option::unwrap_or_default)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing::info!(
        version = crate::VERSION,
        "gpushare {} starting",
        crate::VERSION
    );
    tls::install_default_provider();
    let metrics = Arc::new(Metrics::new());
    let cert = Arc::new(ReloadingCert::load(&args.tls_cert, &args.tls_key).with_context(|| {
        format!(
            "cannot load the serving certificate {} / {} (run `gpushare certs` to make development certificates)",
            args.tls_cert.display(),
            args.tls_key.display()
        )
    })?);
    let tls_config = tls::server_config(cert.clone(), args.client_ca.as_deref())?;
    if let Some(expiry) = tls::not_after(&cert.current()) {
        metrics.certificate_expiry.set(expiry);
    }
    let expiry_gauge = metrics.clone();
    cert.clone().watch(Duration::from_secs(2), move |key| {
        if let Some(expiry) = tls::not_after(key) {
            expiry_gauge.certificate_expiry.set(expiry);
        }
    });

    let status_source: StatusSource;
    let backend: Arc<dyn Backend> = if args.standalone {
        let policy = policy_or_default(args.policy.as_deref())?;
        tracing::info!(gpus = ?args.gpus, policy = ?args.policy, "standalone mode: one implicit node named standalone");
        let backend = Arc::new(StandaloneBackend::new(
            policy,
            Inventory::standalone(args.gpus),
        ));
        if let Some(path) = &args.policy {
            let target = backend.clone();
            policy_file::watch(path.clone(), POLICY_FILE_POLL, metrics.clone(), move |p| {
                target.set_policy(p)
            });
        }
        let view = backend.clone();
        metrics.follow_policy(move || Arc::new(view.snapshot().0));
        let view = backend.clone();
        status_source = StatusSource {
            label: "standalone: each request is checked on its own, nothing is stored, so usage stays 0".into(),
            rows: Arc::new(move || {
                let (policy, inventory) = view.snapshot();
                status::rows(&inventory, &policy, None)
            }),
        };
        backend
    } else {
        let fixed_policy = args.policy.as_deref().map(read_policy).transpose()?;
        let client = kubeconfig::client(
            &args.cluster,
            "run with --standalone to serve without a cluster",
        )
        .await?;
        let backend = crate::cluster::start(
            client,
            &args.policy_configmap,
            crate::cluster::registration::Own {
                namespace: String::new(),
                webhook_configuration: args.webhook_configuration.clone(),
                disruption_budget: args.disruption_budget.clone(),
            },
            fixed_policy,
            metrics.clone(),
        )
        .await?;
        if let Some(path) = &args.policy {
            let target = backend.state.clone();
            policy_file::watch(path.clone(), POLICY_FILE_POLL, metrics.clone(), move |p| {
                target.set_policy(p)
            });
        }
        let view = backend.state.clone();
        metrics.follow_policy(move || view.policy());
        let view = backend.state.clone();
        metrics.follow_shares(move || {
            let (policy, inventory) = view.snapshot();
            status::rows(&inventory, &policy, Some(&view.running_pods()))
        });
        let view = backend.state.clone();
        status_source = StatusSource {
            label: "cluster, as this replica's caches see it".into(),
            rows: Arc::new(move || {
                let (policy, inventory) = view.snapshot();
                status::rows(&inventory, &policy, Some(&view.running_pods()))
            }),
        };
        backend
    };

    let webhook = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let health = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--health-listen)", args.health_listen))?;
    // The health address first: tests read both, and stop reading at the webhook's.
    tracing::info!(
        "serving /healthz, /readyz and /metrics on http://{}",
        health.local_addr()?
    );
    tracing::info!("listening on https://{}", webhook.local_addr()?);
    let state = Arc::new(AppState {
        service: AdmissionService {
            backend,
            metrics: metrics.clone(),
        },
        metrics,
        shutting_down: AtomicBool::new(false),
        request_timeout: Limits::default().request_timeout,
        status_page: args.status_page.then_some(status_source),
    });
    let limits = Limits {
        max_connections: args.max_connections,
        drain_delay: Duration::from_secs_f64(args.drain_delay.max(0.0)),
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout.max(0.0)),
        header_timeout: Duration::from_secs_f64(args.header_timeout.max(0.1)),
        ..Limits::default()
    };
    let listeners = server::Listeners {
        webhook,
        health: Some(health),
    };
    server::serve(listeners, tls_config, state, limits, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail at start-up");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

pub fn check(args: CheckArgs) -> ExitCode {
    let json = args.output == Some(CheckOutput::Json);
    // With -o json, scripts read the reason from stdout too.
    let give_up = |error: anyhow::Error| {
        if json {
            println!("{}", check_json::error(&format!("{error:#}")));
        }
        fail(&error)
    };
    let policy = match policy_or_default(args.policy.as_deref()) {
        Ok(policy) => policy,
        Err(error) => return give_up(error),
    };
    let documents = match check::load(&args.files) {
        Ok(documents) => documents,
        Err(error) => return give_up(error.into()),
    };
    let report = check::check(documents, &policy, Inventory::standalone(args.gpus));
    match args.output {
        None => print_verdicts(&report, false),
        Some(CheckOutput::Yaml) => {
            print_verdicts(&report, true);
            print!("{}", check::to_yaml(&report.objects));
        }
        Some(CheckOutput::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&check_json::results(&report))
                .expect("a JSON value serializes")
        ),
    }
    if report.all_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

/// The verdict lines of `check` and `apply`, each with its warnings on stderr.
fn print_verdicts(report: &check::Report, to_stderr: bool) {
    for line in &report.lines {
        if to_stderr {
            eprintln!("{}", line.text);
        } else {
            println!("{}", line.text);
        }
        for warning in &line.warnings {
            eprintln!("  warning: {warning}");
        }
    }
}

/// `apply`: the verdicts as `check` prints them, then kubectl's line for each applied object.
pub async fn apply(args: ApplyArgs) -> ExitCode {
    match crate::cli::apply::apply(args).await {
        Ok(done) => {
            for note in &done.notes {
                eprintln!("note: {note}");
            }
            print_verdicts(&done.report, false);
            if !done.report.all_allowed() {
                eprintln!("gpushare: nothing applied: a document is denied");
                return ExitCode::from(EXIT_DENIED);
            }
            for name in &done.applied {
                println!("{name} serverside-applied");
            }
            ExitCode::SUCCESS
        }
        Err(error @ ApplyError::Apply { .. }) => {
            eprintln!("gpushare: {error}");
            ExitCode::from(EXIT_DENIED)
        }
        Err(error) => {
            eprintln!("gpushare: {error}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

pub fn certs(args: CertsArgs) -> ExitCode {
    match crate::cli::certs::write(&args.out, &args.service, &args.namespace, args.days) {
        Ok(written) => {
            eprintln!(
                "wrote {}, {} and {} (keys mode 0600); caBundle for the MutatingWebhookConfiguration:",
                written.ca_cert.display(),
                written.cert.display(),
                written.key.display()
            );
            println!("{}", written.ca_bundle);
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.into()),
    }
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let mut notes = Vec::new();
    let result = if args.from.is_empty() {
        let fixed_policy = match args.policy.as_deref().map(read_policy).transpose() {
            Ok(policy) => policy,
            Err(error) => return fail(&error),
        };
        // The kube client retries some failures by itself; a status query must still end.
        let read = read_cluster(&args, fixed_policy, &mut notes);
        match tokio::time::timeout(STATUS_TIMEOUT, read).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "cannot read the cluster within {STATUS_TIMEOUT:?}"
            )),
        }
    } else {
        policy_or_default(args.policy.as_deref()).and_then(|policy| {
            let documents = check::load(&args.from)?;
            let report = check::check(documents, &policy, Inventory::standalone(args.gpus));
            Ok((policy, report.inventory, None, Vec::new()))
        })
    };
    for note in &notes {
        eprintln!("note: {note}");
    }
    let (policy, inventory, running, warnings) = match result {
        Ok(found) => found,
        Err(error) => return fail(&error),
    };
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let rows = status::rows(&inventory, &policy, running.as_ref());
    match args.output {
        StatusOutput::Table => print!("{}", status::render_table(&rows)),
        StatusOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        ),
        StatusOutput::Html => {
            let source = if args.from.is_empty() {
                "cluster".to_owned()
            } else {
                format!("manifests: {}", args.from.join(", "))
            };
            let options = status_page::PageOptions {
                source,
                refresh_seconds: None,
            };
            print!("{}", status_page::render(&rows, &options));
        }
    }
    ExitCode::SUCCESS
}

/// The policy and claims of the cluster, and the warnings about webhooks it cannot call.
async fn read_cluster(
    args: &StatusArgs,
    fixed_policy: Option<Policy>,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Policy, Inventory, Option<RunningPods>, Vec<String>)> {
    let client = kubeconfig::client(
        &args.cluster,
        "pass --from FILE to show the allocation of manifests instead",
    )
    .await?;
    let configmap = args.policy_configmap.as_deref();
    let (policy, inventory, running) =
        crate::cluster::snapshot(&client, configmap, fixed_policy, notes).await?;
    let trust = crate::cluster::webhook_trust::check(&client).await;
    notes.extend(trust.notes);
    Ok((policy, inventory, Some(running), trust.warnings))
}

pub fn version() -> ExitCode {
    println!("gpushare {}", crate::VERSION);
    ExitCode::SUCCESS
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("gpushare: {error:#}");
    ExitCode::from(EXIT_ERROR)
}

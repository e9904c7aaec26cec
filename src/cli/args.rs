//! The command line (clap). Only parsing lives here; `main.rs` turns it into running code.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// The file name kubectl runs for `kubectl gpushare` (a copy of, or a link to, this binary).
pub const PLUGIN_NAME: &str = "kubectl-gpushare";

#[derive(Debug, Parser)]
#[command(
    name = "gpushare",
    version,
    about = "Share NVIDIA T4 GPUs safely between Kubernetes workloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments. Invoked as `kubectl-gpushare` (by kubectl, or directly),
    /// it is the same program; help and usage then name it `kubectl gpushare`.
    pub fn from_env() -> Cli {
        Cli::from_args(std::env::args_os())
    }

    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Cli {
        let args: Vec<OsString> = args.into_iter().collect();
        let mut command = Cli::command();
        if args.first().is_some_and(|argv0| is_plugin(argv0.as_ref())) {
            command = command.bin_name("kubectl gpushare");
        }
        let matches = command.get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// Whether argv[0] names the kubectl plugin (kubectl passes the plugin's full path).
pub fn is_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == PLUGIN_NAME)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook.
    Serve(ServeArgs),
    /// Validate manifests offline with the webhook's rules (exit 0 allowed, 1 denied, 2 error).
    Check(CheckArgs),
    /// Write a CA and a serving certificate for the webhook, and print the caBundle.
    Certs(CertsArgs),
    /// Show modules, client processes and committed MPS percentage per node and GPU.
    Status(StatusArgs),
    /// Decide manifests against the live cluster and, only when all are allowed, apply them
    /// mutated with server-side apply (for users who may not register webhooks).
    Apply(ApplyArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script, e.g. `source <(gpushare completion bash)`.
    Completion(CompletionArgs),
}

/// The cluster a command talks to, found as kubectl finds it.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the pod's ServiceAccount).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for GET /healthz, /readyz and /metrics: never asks for a client
    /// certificate, so probes and Prometheus work when --client-ca is set.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_listen: SocketAddr,
    /// Serving certificate (PEM); re-read when the file changes.
    #[arg(long, default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM).
    #[arg(long, default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Require client certificates signed by this CA (mTLS with the API server).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Policy file; without it the policy comes from the ConfigMap (or the embedded default when standalone).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Run without a cluster: one implicit node named `standalone`.
    #[arg(long, conflicts_with_all = ["kubeconfig", "context"])]
    pub standalone: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// GPU count of the standalone node.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The policy ConfigMap, as NAMESPACE/NAME.
    #[arg(long, default_value = "gpushare-system/gpushare-policy")]
    pub policy_configmap: String,
    /// The MutatingWebhookConfiguration gpushare keeps in step with the policy (the namespaces it
    /// excludes); a Helm release names it after itself.
    #[arg(long, default_value = "gpushare")]
    pub webhook_configuration: String,
    /// gpushare's own PodDisruptionBudget (in the policy ConfigMap's namespace), kept so that a
    /// drain of the last schedulable node completes.
    #[arg(long, default_value = "gpushare")]
    pub disruption_budget: String,
    /// Seconds to keep serving after SIGTERM before closing the listener.
    #[arg(long, default_value_t = 5.0)]
    pub drain_delay: f64,
    /// Seconds in-flight requests may take to finish after the listener closes.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_timeout: f64,
    /// Seconds a client may take to send a request's headers (slow clients are dropped).
    #[arg(long, default_value_t = 5.0)]
    pub header_timeout: f64,
    /// Maximum concurrent connections.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Serve the allocation page (`status -o html`) read-only at GET /status.
    #[arg(long)]
    pub status_page: bool,
    /// Log format on stderr: `text` (coloured only on a terminal) or `json` (one object a line).
    #[arg(long, value_enum, default_value = "text", env = "GPUSHARE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    /// Every object (mutated where allowed); verdicts go to stderr.
    Yaml,
    /// One object `{"results": [...]}`, one entry per verdict.
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML or JSON files, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Output format instead of the verdict lines.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<CheckOutput>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// GPU count of the implicit node.
    #[arg(long)]
    pub gpus: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML or JSON files, or `-` for standard input (repeat -f, or list several after it).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<String>,
    /// The namespace of objects that name none (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Policy file; without it the policy ConfigMap when readable, else the embedded default.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// GPU count of one implicit node, used when the nodes are not readable.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The policy ConfigMap, as NAMESPACE/NAME (default: gpushare-system/gpushare-policy, else
    /// the one a Helm release labelled app.kubernetes.io/component=policy).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub policy_configmap: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    #[arg(long, default_value = "gpushare")]
    pub service: String,
    #[arg(long, default_value = "gpushare-system")]
    pub namespace: String,
    /// Validity of the serving certificate.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
    /// A self-contained HTML page: one bar per node and GPU.
    Html,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Read manifests instead of the cluster (the same numbers as `check`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kubeconfig", "context", "policy_configmap"])]
    pub from: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: StatusOutput,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// GPU count of the implicit node, with --from.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The policy ConfigMap, as NAMESPACE/NAME (default: gpushare-system/gpushare-policy, else
    /// the one a Helm release labelled app.kubernetes.io/component=policy).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub policy_configmap: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_name_is_recognised_by_file_name_only() {
        assert!(is_plugin(OsStr::new("kubectl-gpushare")));
        assert!(is_plugin(OsStr::new("/usr/local/bin/kubectl-gpushare")));
        assert!(!is_plugin(OsStr::new("/usr/local/bin/gpushare")));
        assert!(!is_plugin(OsStr::new("kubectl-gpushare-old")));
    }

    #[test]
    fn apply_takes_files_after_one_or_several_f_flags() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().map(OsString::from));
        let Ok(Cli {
            command: Command::Apply(apply),
        }) = parse(&[
            "kubectl-gpushare",
            "apply",
            "-f",
            "a.yaml",
            "b.yaml",
            "-f",
            "-",
            "-n",
            "team",
        ])
        else {
            panic!("apply parses");
        };
        assert_eq!(apply.files, ["a.yaml", "b.yaml", "-"]);
        assert_eq!(apply.namespace.as_deref(), Some("team"));
        assert!(parse(&["gpushare", "apply"]).is_err(), "-f is required");
    }
}

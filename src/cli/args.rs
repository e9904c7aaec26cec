//! The command line (clap). Only parsing lives here; `main.rs` turns it into running code.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    #[arg(long)]
    pub standalone: bool,
    /// GPU count of the standalone node.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The policy ConfigMap, as NAMESPACE/NAME.
    #[arg(long, default_value = "gpushare-system/gpushare-policy")]
    pub policy_configmap: String,
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
    Yaml,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML or JSON files, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
    /// `yaml`: print every object (mutated where allowed); verdicts go to stderr.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<CheckOutput>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// GPU count of the implicit node.
    #[arg(long)]
    pub gpus: Option<u32>,
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
    #[arg(long)]
    pub from: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: StatusOutput,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// GPU count of the implicit node, with --from.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// The policy ConfigMap, as NAMESPACE/NAME.
    #[arg(long, default_value = "gpushare-system/gpushare-policy")]
    pub policy_configmap: String,
}

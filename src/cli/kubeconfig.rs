//! The cluster a command talks to, found as kubectl finds it: `--kubeconfig FILE`, else the files
//! of KUBECONFIG (merged), else ~/.kube/config, else the pod's ServiceAccount; `--context NAME`
//! picks a context of the kubeconfig instead of its current-context.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::args::ClusterArgs;

/// Where the kubeconfig came from, for messages.
enum Source {
    Flag(PathBuf),
    Env,
    Home(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(path) => write!(f, "--kubeconfig {}", path.display()),
            Source::Env => write!(f, "the kubeconfig of KUBECONFIG"),
            Source::Home(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A client for the cluster of `args`. `hint` says what the command can do without a cluster
/// (it must name only flags the command has); it ends the message when no configuration exists.
pub async fn client(args: &ClusterArgs, hint: &str) -> anyhow::Result<Client> {
    let config = config(args, hint).await?;
    Client::try_from(config).context("cannot build a client for the cluster")
}

async fn config(args: &ClusterArgs, hint: &str) -> anyhow::Result<Config> {
    let found = match &args.kubeconfig {
        Some(path) => Some((Source::Flag(path.clone()), Kubeconfig::read_from(path))),
        None => match Kubeconfig::from_env() {
            Ok(Some(kubeconfig)) => Some((Source::Env, Ok(kubeconfig))),
            Err(error) => Some((Source::Env, Err(error))),
            Ok(None) => home_kubeconfig().map(|path| {
                let read = Kubeconfig::read_from(&path);
                (Source::Home(path), read)
            }),
        },
    };
    let Some((source, kubeconfig)) = found else {
        if let Some(context) = &args.context {
            anyhow::bail!(
                "--context {context} needs a kubeconfig, and there is none (no --kubeconfig, KUBECONFIG unset, \
                 no ~/.kube/config)"
            );
        }
        return Config::incluster().map_err(|error| {
            anyhow::anyhow!(
                "no cluster configuration: no --kubeconfig, KUBECONFIG unset, no ~/.kube/config, and not in a \
                 pod ({error}); {hint}"
            )
        });
    };
    let kubeconfig = kubeconfig.with_context(|| format!("cannot read {source}"))?;
    check_context(&kubeconfig, args.context.as_deref(), &source)?;
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("cannot use {source}"))
}

fn home_kubeconfig() -> Option<PathBuf> {
    let path = std::env::home_dir()?.join(".kube").join("config");
    Path::exists(&path).then_some(path)
}

/// An unknown context is an error that lists the known ones, as kubectl's is.
fn check_context(
    kubeconfig: &Kubeconfig,
    context: Option<&str>,
    source: &Source,
) -> anyhow::Result<()> {
    let known: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let listed = if known.is_empty() {
        "it has none".to_string()
    } else {
        format!("its contexts: {}", known.join(", "))
    };
    match context.or(kubeconfig.current_context.as_deref()) {
        Some(name) if known.contains(&name) => Ok(()),
        Some(name) if context.is_some() => {
            anyhow::bail!("context {name:?} is not in {source}; {listed}")
        }
        Some(name) => anyhow::bail!(
            "the current-context {name:?} of {source} is not one of its contexts; {listed}; pass --context NAME"
        ),
        None => anyhow::bail!("{source} sets no current-context; {listed}; pass --context NAME"),
    }
}

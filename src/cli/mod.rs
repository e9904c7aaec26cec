//! The command line: clap arguments (`args`) and the commands they start (`commands`), with the
//! shells only the command line uses: `check`, `apply` (the kubectl plugin's), `certs`, finding the
//! cluster (`kubeconfig`), shell completion, log formats and the `--policy` file watcher.

pub mod apply;
pub mod args;
pub mod certs;
pub mod check;
mod check_json;
pub mod commands;
pub mod completion;
mod kubeconfig;
pub mod log_buffer;
pub mod log_format;
pub mod policy_file;

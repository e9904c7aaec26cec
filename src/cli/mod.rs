//! The command line: clap arguments (`args`) and the commands they start (`commands`), with the
//! shells only the command line uses: `check`, `apply` (the kubectl plugin's), `certs`, log formats
//! and the `--policy` file watcher.

pub mod apply;
pub mod args;
pub mod certs;
pub mod check;
pub mod commands;
pub mod log_buffer;
pub mod log_format;
pub mod policy_file;

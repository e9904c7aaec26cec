//! The command line: clap arguments (`args`) and the commands they start (`commands`), with the
//! shells only the command line uses: `check`, `status`, `certs` and the `--policy` file watcher.

pub mod args;
pub mod certs;
pub mod check;
pub mod commands;
pub mod policy_file;
pub mod status;

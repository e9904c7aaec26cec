//! `gpushare completion SHELL`: a completion script for the name the binary was run as, so that
//! `kubectl-gpushare completion bash` completes `kubectl-gpushare` as well.

use std::ffi::OsString;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::args::{is_plugin, Cli, PLUGIN_NAME};

pub fn print(shell: Shell, argv0: Option<OsString>) {
    let name = match argv0 {
        Some(argv0) if is_plugin(&argv0) => PLUGIN_NAME,
        _ => "gpushare",
    };
    clap_complete::generate(shell, &mut Cli::command(), name, &mut std::io::stdout());
}

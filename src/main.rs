//! The `gpushare` binary: parses the command line and starts the chosen command.

use std::process::ExitCode;

use clap::Parser;
use gpushare::cli::args::{Cli, Command, LogFormat};
use gpushare::cli::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => commands::check(args),
        Command::Certs(args) => commands::certs(args),
        Command::Serve(args) => {
            let _logs = commands::init_logging(args.log_format);
            match runtime().block_on(commands::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("gpushare: {error:#}");
                    ExitCode::from(commands::EXIT_ERROR)
                }
            }
        }
        Command::Status(args) => {
            let _logs = commands::init_logging(LogFormat::Text);
            runtime().block_on(commands::status(args))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

//! The `gpushare` binary: parses the command line and starts the chosen command.

use std::process::ExitCode;

use gpushare::cli::args::{Cli, Command, LogFormat};
use gpushare::cli::commands;

fn main() -> ExitCode {
    // Also the kubectl plugin: kubectl runs `kubectl-gpushare`, a copy of or link to this binary.
    let cli = Cli::from_env();
    match cli.command {
        Command::Check(args) => commands::check(args),
        Command::Certs(args) => commands::certs(args),
        Command::Serve(args) => {
            let served = {
                let _logs = commands::init_logging(args.log_format);
                let runtime = runtime();
                let served = runtime.block_on(commands::serve(args));
                // Its tasks may still log as they stop, before `_logs` writes the rest out.
                drop(runtime);
                served
            };
            // The logs are written out by now, so the reason comes last.
            match served {
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
        Command::Apply(args) => {
            let _logs = commands::init_logging(LogFormat::Text);
            runtime().block_on(commands::apply(args))
        }
        Command::Version => commands::version(),
        Command::Completion(args) => {
            gpushare::cli::completion::print(args.shell, std::env::args_os().next());
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

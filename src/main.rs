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

/// `pow`, the one libm function the binary calls (tokio's scheduler, after every batch of polls,
/// for its average poll time; prometheus-client, for the latency buckets). Defined here, in Rust,
/// the binary needs no libm.so, whose pages around `pow` kept about 0.45 MiB resident in a server
/// (issue 26, BENCHMARKS.md). The `libm` crate's is FreeBSD's, accurate to within 1 ulp; exact
/// powers, such as the latency buckets' 2^n, come out exact.
#[no_mangle]
pub extern "C" fn pow(base: f64, exponent: f64) -> f64 {
    libm::pow(base, exponent)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_gives_the_latency_buckets_exactly_and_tokios_average_within_an_ulp() {
        // /metrics prints the buckets 50 us x 2^n: a bound off by an ulp would change its label.
        for n in 0..17 {
            assert_eq!(super::pow(2.0, f64::from(n)), f64::from(1u32 << n));
        }
        assert_eq!(super::pow(0.5, 3.0), 0.125);
        // tokio's weighted alpha, (1 - 0.1)^polls; 0.9^7 = 0.4782969.
        assert!((super::pow(0.9, 7.0) - 0.4782969).abs() < 1e-15);
        assert!(super::pow(0.9, 0.0) == 1.0 && super::pow(f64::NAN, 1.0).is_nan());
    }
}

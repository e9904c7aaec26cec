//! When logs may carry colour: a log redirected to a file, a pipe or a container runtime gets
//! plain text (or JSON), never ANSI escapes.

use std::io::IsTerminal as _;

use crate::cli::args::LogFormat;

/// Colour only for text logs on a terminal, and never when `NO_COLOR` is set (no-color.org).
pub fn use_colour(format: LogFormat) -> bool {
    format == LogFormat::Text
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

//! The `satellite` command: serve the map, query it, make certificates, run the demo.
#![forbid(unsafe_code)]

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use satellite::app::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(cli.log_filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    cli::run(cli)
}

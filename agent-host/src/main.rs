//! `agent-host`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    agent_host::cli::run(agent_host::cli::Cli::parse())
}

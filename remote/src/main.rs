//! The `remote` binary: its command line ([`cli`]), over the library.

use clap::Parser as _;

mod cli;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}

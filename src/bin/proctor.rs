//! `proctor`, the command-line client.

use clap::Parser;

/// Proctor's command-line client: run procs and watch their logs.
#[derive(Parser)]
#[command(name = "proctor", version, about)]
struct Cli {}

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    let _cli = Cli::parse();
    eprintln!("proctor: no commands yet; `proctor --version` prints the version");
    std::process::exit(2);
}

//! `proctor`, the command-line client: the ring provider for rustls, then the library.

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    std::process::exit(proctor::cli::run());
}

//! The `tickerfeed` binary: parse the configuration, start the server, wait for a signal.
//! Everything else lives in the library.

use clap::Parser;
use tickerfeed::config::{Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return tickerfeed::healthcheck::run(url);
    }
    let config = match Config::load(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tickerfeed: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = actix_web::rt::System::new().block_on(tickerfeed::server::run_until_signal(config));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickerfeed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

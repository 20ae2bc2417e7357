//! The `tickerfeed` binary: parse the configuration, start the server, wait for a signal.
//! Everything else lives in the library.

use tickerfeed::config::{Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::from_env();
    tickerfeed::logging::init();
    match &cli.command {
        Some(Command::Healthcheck { url }) => return tickerfeed::healthcheck::run(url),
        Some(Command::Gen { seed, symbols, quotes, rate, out }) => {
            let options = tickerfeed::tickgen::GenOptions { seed: *seed, symbols: *symbols, quotes: *quotes, rate: *rate, ..Default::default() };
            return match write_gen(&options, out.as_deref()) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tickerfeed gen: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Token { secret_file, sub, symbols, ttl, admin }) => {
            let request = tickerfeed::access::TokenRequest { sub: sub.clone(), symbols: symbols.clone(), ttl_seconds: *ttl, admin: *admin };
            return match tickerfeed::access::sign_with_secret_file(secret_file, &request) {
                Ok(token) => {
                    println!("{token}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tickerfeed token: {e}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        None => {}
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

fn write_gen(options: &tickerfeed::tickgen::GenOptions, out: Option<&std::path::Path>) -> std::io::Result<()> {
    match out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            tickerfeed::tickgen::generate(options, &mut std::io::BufWriter::new(file))?;
        }
        None => {
            tickerfeed::tickgen::generate(options, &mut std::io::BufWriter::new(std::io::stdout().lock()))?;
        }
    }
    Ok(())
}

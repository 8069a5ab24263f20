//! The `petrel` command line. Today it reports what this build is; the
//! broker core (listeners, sessions, routing) is the next piece of work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Petrel, an MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). It must be readable; its keys take effect
    /// once the broker core is built.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    println!("petrel {}", env!("CARGO_PKG_VERSION"));
    if let Some(path) = &cli.config {
        if let Err(error) = std::fs::read_to_string(path) {
            eprintln!("petrel: cannot read {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("configuration file {} is readable", path.display());
    }
    println!("planned default listeners: 127.0.0.1:1883 and [::1]:1883, anonymous clients allowed");
    println!(
        "this build holds the MQTT wire codec only (petrel::protocol); \
         the broker core is not built yet, so petrel exits now"
    );
    ExitCode::SUCCESS
}

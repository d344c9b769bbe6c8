//! sensorctl: the command line of the TLS interception sensor.

use clap::Parser;

/// Ask the sensor what it saw, or check a host yourself.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    eprintln!("sensorctl: no command given; see `sensorctl --help`");
    std::process::exit(2);
}

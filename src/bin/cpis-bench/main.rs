//! Benchmarks (README "Benchmarks"), each against the server started as a separate process on
//! 127.0.0.1:
//!
//! - `cpis-bench` (the look-up): builds a national-size synthetic register, drives
//!   `GET /Flag?patient:identifier=…` with a fixed number of keep-alive connections for a
//!   bounded time, and prints requests/s, p50/p99 latency, the server's peak RSS, and the audit
//!   rows written against the 2xx responses.
//! - `cpis-bench load` (bulk submission): the same national dataset sent by its 153 councils as
//!   batch Bundles of 1,000 entries (`PUT Patient/{nhs}` and `PUT Flag?identifier=…`), and
//!   prints resources/s, the time for the whole dataset, Bundle latency and peak RSS, and
//!   checks every entry was accepted and every plan stored.
//!
//! - `cpis-bench --notify true`: the look-up benchmark with every council subscribed to a
//!   webhook receiver inside the bench (127.0.0.1): also prints the access notifications
//!   delivered per second and their end-to-end lag (look-up committed → notification received),
//!   and checks every notifiable look-up reached its councils.
//!
//! - `cpis-bench mixed`: the look-up alone, then while councils' 10,000-entry batch Bundles load
//!   back to back; prints both phases' look-ups/s, p50 and p99, the rate kept, and the bulk
//!   load's resources/s meanwhile.
//!
//! - `cpis-bench trail`: the audit team's searches (first page) and bulk export on a trail of
//!   10 million AuditEvents.
//!
//! Run them from a release build: `cargo build --release --bins`, then `target/release/cpis-bench`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpis_fhir::auth::dev::{self, TokenRequest};
use cpis_fhir::domain::{OdsCode, PlanType, Role};
use cpis_fhir::nhs_number::NhsNumber;
use cpis_fhir::store::{self, Store};

#[derive(Parser, Debug)]
#[command(
    about = "CP-IS benchmarks: the look-up (default), bulk submission (`load`), the memory bound under hostile input (`hostile`) and the fuzzer (`fuzz`)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Bench>,
    #[command(flatten)]
    lookup: Args,
}

mod hostile;
mod load;
mod lookup;
mod mixed;
mod notify_bench;
mod register;
mod servers;
mod trail;

use load::run_load;
use lookup::{read_response, run};
use register::*;
use servers::*;

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Bulk submission: the national dataset through batch Bundles.
    Load(LoadArgs),
    /// The memory bound: the costliest bodies found, from several clients at once.
    Hostile(hostile::HostileArgs),
    /// The fuzzer: mutated example resources and Bundles, JSON and XML.
    Fuzz(hostile::FuzzArgs),
    /// The audit team's searches and bulk export on a grown trail (default 10 million rows).
    Trail(trail::TrailArgs),
    /// Look-ups alone, then while councils' batch Bundles load back to back.
    Mixed(mixed::MixedArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// People in the dataset (each with a plan; one in 50 with a second plan elsewhere).
    #[arg(long, default_value_t = 200_000)]
    people: u32,
    /// Councils (each submits its own people).
    #[arg(long, default_value_t = 153)]
    councils: u32,
    /// Entries per Bundle.
    #[arg(long, default_value_t = 1_000)]
    entries: usize,
    /// Bundles in flight at once (councils submitting at the same time).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Port for the server.
    #[arg(long, default_value_t = 18182)]
    port: u16,
    /// Database: a postgres:// URL to benchmark on PostgreSQL (default: SQLite in the data
    /// directory).
    #[arg(long)]
    database: Option<String>,
    /// Server processes over that PostgreSQL database, connections spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

#[derive(clap::Args, Debug)]
struct Args {
    /// People in the synthetic register.
    #[arg(long, default_value_t = 200_000)]
    people: u32,
    /// Councils.
    #[arg(long, default_value_t = 153)]
    councils: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Share of look-ups that find a record.
    #[arg(long, default_value_t = 0.3)]
    hit_ratio: f64,
    /// Keep the data here (reused when it already holds a register); default: a temp directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port for the server.
    #[arg(long, default_value_t = 18181)]
    port: u16,
    /// Database: a postgres:// URL to benchmark on PostgreSQL (default: SQLite in the data
    /// directory).
    #[arg(long)]
    database: Option<String>,
    /// Server processes over that PostgreSQL database, connections spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Ask for the council with each plan (`_include=Flag:author`), as an EPR would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    include_author: bool,
    /// Over HTTPS (TLS 1.3, keep-alive): the server gets the data directory's development
    /// certificate (`serve --dev --tls` makes the same), the clients trust its CA.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    tls: bool,
    /// Look-ups per second in all, spread evenly over the connections (0: each connection as
    /// fast as answers come). A latency is counted from when its request was due, so a server
    /// that falls behind shows it.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Before measuring, grow the audit trail to this many rows (direct inserts: a year of
    /// accesses to the register's people), as eight years of a national service's would be.
    /// Kept with the register in `--data-dir`.
    #[arg(long, default_value_t = 0)]
    trail_rows: u64,
    /// Subscribe every council to a receiver in the bench and measure the notifications.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    notify: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run(&cli.lookup),
        Some(Bench::Load(a)) => run_load(a),
        Some(Bench::Hostile(a)) => hostile::run_hostile(a),
        Some(Bench::Fuzz(a)) => hostile::run_fuzz(a),
        Some(Bench::Trail(a)) => trail::run_trail(a),
        Some(Bench::Mixed(a)) => mixed::run_mixed(a),
    };
    if let Err(e) = result {
        eprintln!("cpis-bench: {e}");
        std::process::exit(1);
    }
}

//! The `cpis-fhir` binary: everything lives in the library; see `cli`.

/// mimalloc instead of the system allocator: the request path makes many small, short-lived
/// allocations (JSON values, strings, Diesel binds), and glibc's malloc and free took ~10% of
/// the server's CPU under the look-up benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cpis_fhir::cli::run()
}

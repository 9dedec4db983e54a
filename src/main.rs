//! The `cpis-fhir` binary: everything lives in the library; see `cli`.

/// mimalloc instead of the system allocator: the request path makes many small, short-lived
/// allocations (JSON values, strings, Diesel binds), and glibc's malloc and free took ~10% of
/// the server's CPU under the look-up benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    return_freed_memory_promptly();
    cpis_fhir::cli::run()
}

/// By default mimalloc keeps memory a thread has freed, committed, for that thread to reuse.
/// With large bodies parsed on many threads (HTTP workers, the blocking pool) that retention,
/// not the live data, decided the peak: under `cpis-bench hostile` the server peaked at 325–379
/// MiB by default against 168–209 MiB with freed memory returned at once, for the same look-up
/// throughput (README "Limits"). mimalloc reads these options from the environment only as the
/// process starts, so they are set here and the binary executes itself again, once. An operator
/// who sets `MIMALLOC_PURGE_DELAY` keeps their own choice.
#[cfg(unix)]
fn return_freed_memory_promptly() {
    use std::os::unix::process::CommandExt;
    const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(PURGE_DELAY, "0")
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .exec();
    eprintln!("cpis-fhir: could not apply the allocator settings ({err}); running without them");
}

//! The `cpis-fhir` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    cpis_fhir::cli::run()
}

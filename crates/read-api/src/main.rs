//! read-api binary: the service scaffold runs it (settings, logging,
//! signals, exit status).

/// mimalloc rather than glibc's malloc: L1 entries come and go (expiry,
/// fences, refills) across the worker and subscriber threads, and glibc kept
/// the freed memory of an L1 refilled after expiry, doubling RSS
/// (docs/benchmarks.md, "what profiling found").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    service::app::run(service::settings::Role::ReadApi, read_api::build)
}

//! write-api binary: the service scaffold runs it (settings, logging,
//! signals, exit status).

fn main() -> std::process::ExitCode {
    service::app::run(service::settings::Role::WriteApi, write_api::build)
}

//! invalidator binary: load settings (exit 2 when invalid), run until SIGTERM.

use service::settings::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = service::Settings::load_or_exit(Role::Invalidator);
    service::telemetry::init_logging(&settings.log.format);
    let shutdown = service::shutdown::on_signal();
    let bind = settings.invalidator.bind.clone();
    let app = invalidator::Application::build_with_shutdown(settings, shutdown)
        .await
        .inspect_err(|e| {
            tracing::error!(error = format!("{e:#}"), "invalidator failed to start")
        })?;
    tracing::info!(%bind, port = app.port(), "invalidator running");
    app.run_until_stopped().await
}

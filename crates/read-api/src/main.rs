//! read-api binary: load settings (exit 2 when invalid), run until SIGTERM.

use service::settings::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = service::Settings::load_or_exit(Role::ReadApi);
    service::telemetry::init_logging(&settings.log.format);
    let shutdown = service::shutdown::on_signal();
    let bind = settings.read_api.bind.clone();
    let app = read_api::Application::build_with_shutdown(settings, shutdown)
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "read-api failed to start"))?;
    tracing::info!(%bind, port = app.port(), "read-api listening");
    app.run_until_stopped().await
}

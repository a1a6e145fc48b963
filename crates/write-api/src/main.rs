//! write-api binary: load settings (exit 2 when invalid), run until SIGTERM.

use service::settings::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = service::Settings::load_or_exit(Role::WriteApi);
    service::telemetry::init_logging(&settings.log.format);
    let shutdown = service::shutdown::on_signal();
    let bind = settings.write_api.bind.clone();
    let app = write_api::Application::build_with_shutdown(settings, shutdown)
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "write-api failed to start"))?;
    tracing::info!(%bind, port = app.port(), "write-api listening");
    app.run_until_stopped().await
}

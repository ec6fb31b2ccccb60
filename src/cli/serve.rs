//! `clinscribe serve`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::http::{self, AppState};

pub(super) async fn run(settings: DatabaseSettings, bind: SocketAddr) -> anyhow::Result<ExitCode> {
    let db = Database::open(&settings)
        .await
        .context("opening the database")?;
    tracing::info!(database = %settings.url, synchronous = ?settings.synchronous, "database ready");
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (PWA_BIND)"))?;
    let local = listener.local_addr()?;
    // On stdout, so scripts (and tests) can find the port when binding to :0.
    println!("clinscribe listening on http://{local}");
    http::serve(listener, AppState::new(db), shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

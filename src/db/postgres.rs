//! PostgreSQL: one pool shared by every request, for deployments where several
//! clinscribe instances serve one database.
//!
//! Unlike SQLite, PostgreSQL handles concurrent writers itself (row locks,
//! MVCC), so there is no writer queue and no group commit: each request takes
//! a pooled connection, and PostgreSQL's own group commit batches the fsyncs.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::DbError;
use crate::config::DatabaseSettings;

/// An open PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pool: PgPool,
}

impl PgDatabase {
    /// Connects with the pool size and statement timeout from `settings`,
    /// without touching the schema.
    pub async fn connect(settings: &DatabaseSettings, url: &str) -> Result<Self, DbError> {
        let options: PgConnectOptions = url.parse().map_err(|source| DbError::Connect {
            url: settings.url.to_string(),
            source,
        })?;
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        let options = options
            .application_name("clinscribe")
            // Notices such as "relation already exists, skipping" are not worth a log line.
            .options([
                ("statement_timeout", timeout_ms.as_str()),
                ("client_min_messages", "warning"),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect {
                url: settings.url.to_string(),
                source,
            })?;
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(drop)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether [`PgDatabase::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

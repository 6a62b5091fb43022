//! A fresh database per bench configuration: an SQLite file, or a PostgreSQL database created
//! on the server and dropped afterwards.

use std::path::Path;

use anyhow::Context as _;
use rand::RngCore as _;
use url::Url;

use clap::ValueEnum;

/// A fresh database for one configuration, dropped on [`BenchDb::drop_db`].
pub(super) struct BenchDb {
    pub(super) url: String,
    admin: Option<(String, String)>,
}

impl BenchDb {
    pub(super) async fn create(
        backend: BackendArg,
        admin_url: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let tag = &uuid_suffix();
        match backend {
            BackendArg::Sqlite => Ok(Self {
                url: format!("sqlite://{}", dir.join(format!("bench-{tag}.db")).display()),
                admin: None,
            }),
            BackendArg::Postgres => {
                use sqlx::{Connection as _, Executor as _};
                let name = format!("tributary_bench_{tag}");
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .context("cannot connect to the PostgreSQL server")?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                let mut url = Url::parse(admin_url)?;
                url.set_path(&format!("/{name}"));
                Ok(Self {
                    url: url.to_string(),
                    admin: Some((admin_url.to_owned(), name)),
                })
            }
        }
    }

    pub(super) async fn drop_db(&self) {
        use sqlx::{Connection as _, Executor as _};
        if let Some((admin, name)) = &self.admin
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}

pub(super) fn uuid_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    hex_lower(&bytes)
}

pub(super) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A backend to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Postgres,
    Sqlite,
}

impl BackendArg {
    pub(super) fn name(self) -> &'static str {
        match self {
            BackendArg::Postgres => "PostgreSQL",
            BackendArg::Sqlite => "SQLite",
        }
    }
}

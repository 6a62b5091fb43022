//! Test databases: a fresh SQLite file in a temporary directory, or a fresh PostgreSQL database
//! created on the server named by `TRIBUTARY_TEST_POSTGRES_URL` and dropped afterwards.
//! Compiled for tests and behind the `testing` feature for other crates' tests.

use std::str::FromStr;

use sqlx::{Connection as _, Executor as _, postgres::PgConnectOptions};

use crate::{Store, crypto::Keyring, store::StoreOptions};

/// The environment variable that enables PostgreSQL tests.
pub const POSTGRES_URL_VAR: &str = "TRIBUTARY_TEST_POSTGRES_URL";

pub struct TestDb {
    pub url: String,
    pub keyring: Keyring,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url,
            keyring: Keyring::random_for_tests(),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty database on the test server.
    pub async fn postgres() -> Self {
        let admin = std::env::var(POSTGRES_URL_VAR)
            .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} must be set for PostgreSQL tests"));
        let name = format!("tributary_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the PostgreSQL test server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let options = PgConnectOptions::from_str(&admin).expect("valid URL");
        let url = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            name
        );
        Self {
            url,
            keyring: Keyring::random_for_tests(),
            _dir: None,
            postgres: Some((admin, name)),
        }
    }

    pub async fn store(&self) -> Store {
        Store::open_and_migrate(&self.url, &StoreOptions::default(), self.keyring.clone())
            .await
            .expect("open test store")
    }

    /// Drops a PostgreSQL test database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.postgres
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

/// Declares each listed `async fn name(db: TestDb)` as two tests, `sqlite::name` and
/// `postgres::name`; the PostgreSQL ones are ignored (with the reason shown by the test runner)
/// unless `TRIBUTARY_TEST_POSTGRES_URL` was set at build time. The invoking crate needs the
/// `postgres_tests` cfg from a build script like engine's.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::testing::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "PostgreSQL skipped: set TRIBUTARY_TEST_POSTGRES_URL to run it")]
                async fn $name() {
                    let db = $crate::testing::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

//! Development secrets: so that `tributary serve` runs with no configuration at all, a missing
//! JWT secret or token-encryption key is generated once, written beside the SQLite database and
//! reused on every later start (partner tokens stay decryptable and minted JWTs stay valid across
//! restarts).
//!
//! Configured values always win; the file only fills gaps. With `dev_secrets = false` nothing is
//! generated and a missing secret is a configuration error. The file is itself a valid partial
//! configuration (`[auth] jwt_secret`, `[crypto] keys`), created with mode 0600.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use engine::secret::SecretString;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};

/// File name used when the database is not a SQLite file (PostgreSQL, in-memory SQLite).
pub const DEFAULT_FILE_NAME: &str = "tributary.secrets.toml";

/// Which development secrets a loaded configuration uses, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSecretsInUse {
    /// The secrets file.
    pub path: PathBuf,
    /// The file was created (or completed) during this load.
    pub generated: bool,
    /// `auth.jwt_secret` came from the file.
    pub jwt_secret: bool,
    /// `crypto.keys` came from the file: the id of the key.
    pub key_id: Option<String>,
}

impl DevSecretsInUse {
    /// The loud multi-line warning printed to stderr at start-up.
    pub fn warning(&self) -> String {
        let mut what = Vec::new();
        if self.jwt_secret {
            what.push("the JWT signing secret".to_owned());
        }
        if let Some(id) = &self.key_id {
            what.push(format!("the token-encryption key `{id}`"));
        }
        let verb = if self.generated {
            "were GENERATED into"
        } else {
            "are read from"
        };
        let bar = "=".repeat(76);
        let mut out = String::new();
        let lines = [
            bar.clone(),
            "DEVELOPMENT SECRETS IN USE - DO NOT RUN LIKE THIS IN PRODUCTION".to_owned(),
            format!("{} {verb}", what.join(" and ")),
            format!("  {}", self.path.display()),
            "Anyone who can read that file can mint API tokens and decrypt partner tokens."
                .to_owned(),
            "In production set:".to_owned(),
            "  TRIBUTARY_AUTH__JWT_SECRET=<at least 32 random bytes>".to_owned(),
            "  TRIBUTARY_CRYPTO__KEYS__<id>=<base64 of 32 random bytes>".to_owned(),
            "  TRIBUTARY_CRYPTO__ACTIVE_KEY_ID=<id>".to_owned(),
            "  TRIBUTARY_DEV_SECRETS=false   (so a missing secret fails the start)".to_owned(),
            bar,
        ];
        for line in lines {
            let _ = writeln!(out, "WARNING: {line}");
        }
        out.pop();
        out
    }
}

/// Fill a missing JWT secret and/or token-encryption key from the secrets file, generating it
/// first if needed. Returns `None` when nothing was missing or `dev_secrets` is off.
pub fn apply(config: &mut Config) -> Result<Option<DevSecretsInUse>, ConfigError> {
    let need_jwt = config.auth.jwt_secret.is_none();
    let need_key = config.crypto.keys.is_empty();
    if !config.dev_secrets || !(need_jwt || need_key) {
        return Ok(None);
    }
    let path = secrets_path(&config.database.url);
    let (file, generated) = load_or_create(&path)?;

    let mut in_use = DevSecretsInUse {
        path: std::path::absolute(&path).unwrap_or(path),
        generated,
        jwt_secret: false,
        key_id: None,
    };
    if need_jwt {
        config.auth.jwt_secret = Some(SecretString::new(file.auth.jwt_secret.clone()));
        in_use.jwt_secret = true;
    }
    if need_key {
        config.crypto.keys = file
            .crypto
            .keys
            .iter()
            .map(|(id, key)| (id.clone(), SecretString::new(key.clone())))
            .collect();
        config.crypto.active_key_id = Some(file.crypto.active_key_id.clone());
        in_use.key_id = Some(file.crypto.active_key_id.clone());
    }
    Ok(Some(in_use))
}

/// Beside the SQLite database file (`data/app.db` → `data/app.secrets.toml`); for PostgreSQL
/// and in-memory SQLite, `tributary.secrets.toml` in the working directory.
pub fn secrets_path(database_url: &str) -> PathBuf {
    beside_database(database_url, "secrets.toml")
}

/// `<stem>.<suffix>` beside the SQLite database file (`data/app.db` → `data/app.<suffix>`);
/// for PostgreSQL and in-memory SQLite, `tributary.<suffix>` in the working directory.
pub fn beside_database(database_url: &str, suffix: &str) -> PathBuf {
    let fallback = || PathBuf::from(format!("tributary.{suffix}"));
    let Some(rest) = database_url.strip_prefix("sqlite:") else {
        return fallback();
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let db_path = rest.split(['?', '#']).next().unwrap_or_default();
    if db_path.is_empty() || db_path.contains(":memory:") {
        return fallback();
    }
    let db_path = Path::new(db_path);
    let stem = db_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("tributary");
    db_path.with_file_name(format!("{stem}.{suffix}"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    auth: FileAuth,
    crypto: FileCrypto,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    jwt_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCrypto {
    active_key_id: String,
    keys: BTreeMap<String, String>,
}

impl SecretsFile {
    fn generate() -> Self {
        let mut rng = rand::rng();
        let mut jwt = [0u8; 32];
        rng.fill_bytes(&mut jwt);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let id = format!("dev-{}", chrono::Utc::now().format("%Y%m%d"));
        Self {
            auth: FileAuth {
                jwt_secret: URL_SAFE_NO_PAD.encode(jwt),
            },
            crypto: FileCrypto {
                active_key_id: id.clone(),
                keys: BTreeMap::from([(id, STANDARD.encode(key))]),
            },
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.auth.jwt_secret.len() < crate::config::MIN_JWT_SECRET_BYTES {
            return Err("auth.jwt_secret is too short".into());
        }
        if !self.crypto.keys.contains_key(&self.crypto.active_key_id) {
            return Err("crypto.active_key_id is not one of crypto.keys".into());
        }
        for (id, key) in &self.crypto.keys {
            crate::config::decode_key(key).map_err(|e| format!("crypto.keys.{id}: {e}"))?;
        }
        Ok(())
    }

    fn to_toml(&self) -> Result<String, String> {
        let body = toml::to_string(self).map_err(|e| e.to_string())?;
        Ok(format!(
            "# Development secrets generated by tributary on {}.\n\
             # NOT FOR PRODUCTION: set TRIBUTARY_AUTH__JWT_SECRET, TRIBUTARY_CRYPTO__KEYS__<id> and\n\
             # TRIBUTARY_CRYPTO__ACTIVE_KEY_ID instead. Deleting this file makes stored partner\n\
             # tokens undecryptable and invalidates minted JWTs.\n\n{body}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        ))
    }
}

/// Read the file, or create it if it does not exist. Returns whether it was created.
fn load_or_create(path: &Path) -> Result<(SecretsFile, bool), ConfigError> {
    let fail = |message: String| ConfigError::DevSecrets {
        path: path.to_owned(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(&text).map(|f| (f, false)).map_err(fail),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
    }
    let file = SecretsFile::generate();
    let text = file.to_toml().map_err(&fail)?;
    match create_private(path, &text) {
        Ok(()) => Ok((file, true)),
        // Another process (a second worker starting at the same moment) won the race: use its.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text =
                std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
            parse(&text).map(|f| (f, false)).map_err(fail)
        }
        Err(e) => Err(fail(format!("cannot create: {e}"))),
    }
}

fn parse(text: &str) -> Result<SecretsFile, String> {
    let file: SecretsFile = toml::from_str(text)
        .map_err(|e| format!("cannot parse ({e}); delete the file to regenerate it"))?;
    file.check()
        .map_err(|e| format!("{e}; delete the file to regenerate it"))?;
    Ok(file)
}

/// Create `path` exclusively, readable and writable by the owner only.
fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if written.is_err() {
        // Do not leave a half-written file that the next start would refuse to parse.
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_beside_the_sqlite_file() {
        let cases = [
            ("sqlite://tributary.db", "tributary.secrets.toml"),
            ("sqlite:tributary.db", "tributary.secrets.toml"),
            ("sqlite://data/app.sqlite?mode=rwc", "data/app.secrets.toml"),
            ("sqlite:///var/lib/t/t.db", "/var/lib/t/t.secrets.toml"),
            ("sqlite::memory:", DEFAULT_FILE_NAME),
            ("sqlite://:memory:", DEFAULT_FILE_NAME),
            ("postgres://u:p@localhost/db", DEFAULT_FILE_NAME),
        ];
        for (url, expected) in cases {
            assert_eq!(secrets_path(url), PathBuf::from(expected), "{url}");
        }
    }

    #[test]
    fn generated_file_round_trips_and_checks() {
        let file = SecretsFile::generate();
        file.check().unwrap();
        let parsed = parse(&file.to_toml().unwrap()).unwrap();
        assert_eq!(parsed.auth.jwt_secret, file.auth.jwt_secret);
        assert_eq!(parsed.crypto.keys, file.crypto.keys);
        assert!(parsed.crypto.active_key_id.starts_with("dev-"));
    }

    #[test]
    fn warning_names_the_file_and_the_production_variables() {
        let warning = DevSecretsInUse {
            path: PathBuf::from("/tmp/x.secrets.toml"),
            generated: true,
            jwt_secret: true,
            key_id: Some("dev-20250101".into()),
        }
        .warning();
        for needle in [
            "/tmp/x.secrets.toml",
            "TRIBUTARY_AUTH__JWT_SECRET",
            "TRIBUTARY_CRYPTO__KEYS__<id>",
            "TRIBUTARY_CRYPTO__ACTIVE_KEY_ID",
            "dev-20250101",
        ] {
            assert!(warning.contains(needle), "{needle} missing from {warning}");
        }
        assert!(warning.lines().all(|l| l.starts_with("WARNING: ")));
    }
}

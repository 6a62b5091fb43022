//! The environment and command-line layers as figment providers, and the translation of figment
//! errors into messages that name the key and where its value came from.
//!
//! figment's own `Env` provider reads the process environment directly (so parallel tests would
//! race on it) and parses values eagerly: `TRIBUTARY_PARTNERS__X__CLIENT_ID=12345` would become a
//! number and fail to deserialize into a string. Here scalar values stay strings and
//! [`figment::Figment::extract_lossy`] converts them where a number or boolean is expected; only
//! arrays (`[a, b]`) and inline tables are parsed.

use figment::{
    Figment, Metadata, Profile, Provider,
    error::Kind,
    value::{Dict, Map, Value},
};

use super::{CliOverrides, Config, ConfigError, ENV_PREFIX};

/// A snapshot of environment variables to read configuration from.
#[derive(Debug, Clone, Default)]
pub struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    /// The current process's environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// An explicit set of variables (tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The configuration's variables as a nested dictionary: `TRIBUTARY_<KEY>` where `<KEY>`'s
    /// first `__`-separated segment is a top-level key of [`Config`] (a section such as
    /// `SERVER`, or `DEV_SECRETS`). Every other `TRIBUTARY_…` variable (`TRIBUTARY_CONFIG`, the
    /// tests' `TRIBUTARY_TEST_POSTGRES_URL`, another tool's) is not ours and is ignored. In the
    /// partner-name segment `_` stands for `-`, which shells do not allow in variable names
    /// (see docs/configuration.md#environment).
    pub(super) fn provider(&self) -> Result<Layer, ConfigError> {
        let top_level = top_level_keys();
        let mut dict = Dict::new();
        for (name, value) in &self.0 {
            let upper = name.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let mut path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if !top_level.contains(&path[0].as_str()) {
                continue;
            }
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::invalid(
                    "",
                    format!(
                        "environment variable {name}: empty key segment \
                         (nested keys are separated by exactly `__`)"
                    ),
                ));
            }
            if path[0] == PARTNERS
                && let Some(partner) = path.get_mut(1)
            {
                *partner = partner.replace('_', "-");
            }
            insert(&mut dict, &path, env_value(value));
        }
        let metadata =
            Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
                format!("{ENV_PREFIX}{}", env_spelling(keys))
            });
        Ok(Layer { metadata, dict })
    }
}

/// The section whose second segment is a partner name.
const PARTNERS: &str = "partners";

/// The variable name (after the prefix) that sets the key at `keys`.
fn env_spelling(keys: &[&str]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let key = key.to_ascii_uppercase();
            if i == 1 && keys[0] == PARTNERS {
                key.replace('-', "_")
            } else {
                key
            }
        })
        .collect::<Vec<_>>()
        .join("__")
}

/// The top-level keys of [`Config`], read from its `Deserialize` implementation so that the
/// environment namespace cannot drift from the struct: serde hands a struct's field names to
/// the deserializer, and this one only records them.
fn top_level_keys() -> &'static [&'static str] {
    use serde::{
        Deserialize as _,
        de::{self, Visitor},
    };

    #[derive(Debug)]
    struct Fields(Option<&'static [&'static str]>);

    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }

    impl std::error::Error for Fields {}

    impl de::Error for Fields {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Fields(None)
        }
    }

    struct Probe;

    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Fields;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(None))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(Some(fields)))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    match Config::deserialize(Probe) {
        Err(Fields(Some(fields))) => fields,
        _ => unreachable!("Config deserializes as a struct"),
    }
}

/// Scalars stay strings (converted later by lossy extraction); arrays and tables are parsed.
fn env_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        Ok(value @ (Value::Array(..) | Value::Dict(..))) => value,
        _ => Value::from(raw.to_owned()),
    }
}

/// The command-line flags as a nested dictionary.
pub(super) fn cli_provider(overrides: &CliOverrides) -> Layer {
    let mut dict = Dict::new();
    if let Some(listen) = overrides.listen {
        insert(&mut dict, &["server", "listen"], listen.to_string().into());
    }
    if let Some(url) = &overrides.database_url {
        insert(&mut dict, &["database", "url"], url.clone().into());
    }
    if overrides.no_sandbox {
        insert(&mut dict, &["sandbox", "enabled"], false.into());
    }
    let metadata = Metadata::named("command-line flag").interpolater(
        |_: &Profile, keys: &[&str]| match keys {
            ["server", "listen"] => "--listen".to_owned(),
            ["database", "url"] => "--database-url".to_owned(),
            ["sandbox", "enabled"] => "--no-sandbox".to_owned(),
            other => other.join("."),
        },
    );
    Layer { metadata, dict }
}

fn insert<S: AsRef<str>>(dict: &mut Dict, path: &[S], value: Value) {
    let (first, rest) = path.split_first().expect("paths are non-empty");
    let key = first.as_ref().to_owned();
    if rest.is_empty() {
        dict.insert(key, value);
        return;
    }
    let entry = dict.entry(key).or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        // `A=1` and `A__B=2` both set: the nested one wins.
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

/// A fixed dictionary with a name and a key-to-origin interpolater for error messages.
pub(super) struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Turn a figment error into `<key>: <problem> (<origin>)`.
pub(super) fn describe(figment: &Figment, error: figment::Error) -> ConfigError {
    let more = error.count().saturating_sub(1);
    let Some(error) = error.into_iter().next() else {
        return ConfigError::invalid("", "unknown error");
    };
    let mut path = error.path.clone();
    // figment puts an unknown key at the end of the path but not a missing one; be robust to both.
    let mut push_field = |field: &str| {
        if path.last().map(String::as_str) != Some(field) {
            path.push(field.to_owned());
        }
    };
    let problem = match &error.kind {
        Kind::UnknownField(field, expected) => {
            push_field(field);
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            push_field(field);
            "missing (required)".to_owned()
        }
        other => other.to_string(),
    };
    let key = path.join(".");
    let origin = origin(figment, &error, &path);
    let more = match more {
        0 => String::new(),
        n => format!(" (and {n} more problem(s))"),
    };
    ConfigError::invalid(key, format!("{problem}{origin}{more}"))
}

/// Where the offending value came from, preferring the value's own provider over the error's
/// (an unknown key's error carries the tag of its parent table, which may come from a
/// different layer).
fn origin(figment: &Figment, error: &figment::Error, path: &[String]) -> String {
    let metadata = (!path.is_empty())
        .then(|| figment.find_metadata(&path.join(".")))
        .flatten()
        .or(error.metadata.as_ref());
    let Some(metadata) = metadata else {
        return String::new();
    };
    if let Some(file) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return format!(" (in {})", file.display());
    }
    if path.is_empty() || metadata.name == "Default" {
        return String::new();
    }
    format!(
        " (from {} {})",
        metadata.name,
        metadata.interpolate(&Profile::Default, path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_are_the_sections_and_dev_secrets() {
        let keys = top_level_keys();
        for key in [
            "server",
            "database",
            "auth",
            "partners",
            "workers",
            "dev_secrets",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert!(!keys.contains(&"dev_secrets_in_use"), "not configurable");
    }

    #[test]
    fn partner_names_are_spelled_with_underscores_in_variables() {
        assert_eq!(
            env_spelling(&["partners", "acme-pump", "client_secret"]),
            "PARTNERS__ACME_PUMP__CLIENT_SECRET"
        );
        assert_eq!(
            env_spelling(&["crypto", "keys", "a-b"]),
            "CRYPTO__KEYS__A-B"
        );
    }
}

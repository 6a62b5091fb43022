//! Where an `ops` tool reads and acts: straight against the database (`--database-url`, or the
//! configuration's), or through a running server's API (`--server URL` with an ops bearer
//! token, `--token` or `TRIBUTARY_OPS_TOKEN`). Through the server, the tool sees and does
//! exactly what the API answers; a refused request prints the problem's stable code and detail.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use url::Url;

/// The database or a server.
#[derive(Debug, Clone, Args)]
pub struct Source {
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL", conflicts_with = "server")]
    pub database_url: Option<String>,
    /// A running Tributary's base URL (e.g. http://127.0.0.1:8080): use its API instead of
    /// the database. Needs an ops token.
    #[arg(long, value_name = "URL", requires = "token")]
    pub server: Option<Url>,
    /// An ops bearer token for --server (`tributary token --role ops --subject NAME`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TRIBUTARY_OPS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A running server's API, as an operator.
pub struct Remote {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// The server named by `source`, if any.
    pub fn of(source: &Source) -> anyhow::Result<Option<Self>> {
        let (Some(base), Some(token)) = (&source.server, &source.token) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Some(Self {
            base: base.clone(),
            token: token.clone(),
            http,
        }))
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("not a URL: {}{path}", self.base))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.http.get(self.url(path)?).bearer_auth(&self.token);
        self.answer(path, request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(self.url(path)?)
            .bearer_auth(&self.token)
            .json(body);
        self.answer(path, request).await
    }

    async fn answer(&self, path: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["code"].as_str().unwrap_or("error");
        let detail = body["detail"].as_str().unwrap_or("");
        anyhow::bail!("{path}: {} {code}: {detail}", status.as_u16())
    }
}

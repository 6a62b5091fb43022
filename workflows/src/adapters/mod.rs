//! The partners' data API clients: one [`DataClient`] per partner fetches every record of a
//! time window and hands each to the caller as it arrives, as untouched JSON (mapping happens
//! there, one record at a time, so one odd record never fails a batch), and classifies every
//! failure into a [`FetchError`], once, here.
//!
//! Only the envelope is parsed strictly: a list response must be a JSON object with a
//! `records` array (the pump's also an optional `nextCursor` string); anything else is a
//! malformed body. Each record is then parsed on its own; one that cannot be is handed over
//! as [`Unreadable`](crate::records::Unreadable) (docs/partner-data.md).
//!
//! Windows: the caller walks time in windows of at most [`DataClient::max_window`]. Dexcom
//! windows are inclusive at both ends, so adjacent windows share an instant and its records
//! come twice (storage is idempotent by record id: docs/dexcom.md); the pump's are
//! `[start, end)`. The caller re-reads an overlap behind its cursor for late and backfilled
//! data (docs/transfers.md); [`DataClient::data_range`] tells where new data landed.
//!
//! # Layout
//! - `mod.rs`: [`DataClient`], [`DataRange`], limits and window checks.
//! - `error.rs`: [`FetchError`] and the response → variant table; `Retry-After`.
//! - `http.rs`: one rate-limited authenticated `GET`: a list streamed record by record, or a
//!   small document; size-capped.
//! - `scan.rs`: the streaming envelope scanner that cuts a body into records.
//! - `budget.rs`: [`ResponseBudget`], the process-wide bound on responses being read.
//! - `rate.rs`: [`RateLimiter`], the per-partner token bucket shared process-wide.
//! - `dexcom.rs`: Dexcom v3 list endpoints and `dataRange`.
//! - `pump.rs`: cursor-paged basal and bolus.

mod budget;
mod dexcom;
mod error;
mod http;
mod pump;
mod rate;
mod scan;

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use engine::secret::SecretString;
use url::Url;

use self::http::Transport;
pub use self::{
    budget::{DEFAULT_RESPONSE_MEMORY_BYTES, ResponseBudget, WindowShare},
    error::{DataClientError, FetchError, RetryAfter},
    http::MAX_RECORD_BYTES,
    rate::RateLimiter,
};
use crate::{
    partner::{PartnerConfig, PartnerKind},
    records::{RecordKind, RecordSink},
};

/// Longest `max_window_days` accepted (chrono and partners alike stop making sense beyond).
const MAX_WINDOW_DAYS: u32 = 3650;

/// The time span a partner reports data for, from `dataRange`: the earliest start and latest
/// end over EGVs, calibrations and events. Both `None` when the partner has nothing (new
/// since `last_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// One partner's data API client. Cheap to clone; clones share the HTTP connection pool and
/// the rate limiter, which is also shared with any other `DataClient` of the same partner.
#[derive(Clone)]
pub struct DataClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: PartnerKind,
    /// `api_base_url`; endpoint paths are appended as segments.
    base: Url,
    transport: Transport,
    max_window: TimeDelta,
    /// The pump's `limit`.
    page_size: u32,
    /// Pages followed per record kind and window before giving up with an error.
    max_pages: u32,
    /// Shared by every client of the process (set by [`DataClient::with_budget`]).
    budget: ResponseBudget,
}

impl fmt::Debug for DataClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataClient")
            .field("partner", &self.inner.transport.partner)
            .field("kind", &self.inner.kind)
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

impl DataClient {
    /// Checks the limits (`max_window_days` 1–3650, `max_records_per_page` and
    /// `max_pages_per_fetch` at least 1, `requests_per_second` finite and positive,
    /// `request_timeout_secs` at least 1) and the base URL, and builds the HTTP client.
    pub fn new(name: &str, config: &PartnerConfig) -> Result<Self, DataClientError> {
        let invalid = |field, reason| DataClientError::InvalidLimit {
            partner: name.to_owned(),
            field,
            reason,
        };
        if !(1..=MAX_WINDOW_DAYS).contains(&config.max_window_days) {
            return Err(invalid("max_window_days", "must be from 1 to 3650"));
        }
        if config.max_records_per_page == 0 {
            return Err(invalid("max_records_per_page", "must be at least 1"));
        }
        if config.max_pages_per_fetch == 0 {
            return Err(invalid("max_pages_per_fetch", "must be at least 1"));
        }
        let rate = config.requests_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid("requests_per_second", "must be a positive number"));
        }
        if config.request_timeout_secs == 0 {
            return Err(invalid("request_timeout_secs", "must be at least 1"));
        }
        if config.max_response_bytes < 1024 {
            return Err(invalid("max_response_bytes", "must be at least 1024"));
        }
        let base = config.api_base_url.clone();
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(DataClientError::InvalidBaseUrl {
                partner: name.to_owned(),
            });
        }
        let timeout = Duration::from_secs(config.request_timeout_secs);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DataClientError::HttpClient {
                partner: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                kind: config.kind,
                base,
                transport: Transport {
                    partner: name.to_owned(),
                    http,
                    timeout,
                    limiter: rate::shared(name, rate),
                    max_body: config.max_response_bytes,
                },
                max_window: TimeDelta::days(i64::from(config.max_window_days)),
                page_size: config.max_records_per_page,
                max_pages: config.max_pages_per_fetch,
                budget: ResponseBudget::default(),
            }),
        })
    }

    /// The same client, drawing on `budget` for its responses (the process's one budget).
    pub fn with_budget(self, budget: ResponseBudget) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        Self {
            inner: Arc::new(Inner { budget, ..inner }),
        }
    }

    /// The partner's name.
    pub fn name(&self) -> &str {
        &self.inner.transport.partner
    }

    /// The longest window [`DataClient::fetch_window`] accepts.
    pub fn max_window(&self) -> TimeDelta {
        self.inner.max_window
    }

    /// Every record of the `kinds` asked (all the partner offers when `None`) with time in
    /// the window (Dexcom `[start, end]`: EGVs, calibrations, events, alerts, and the current
    /// device records; pump `[start, end)`: basal and bolus, following `nextCursor` to the
    /// end), each handed to `sink` as it arrives. On an error the records already handed over
    /// are not the whole window: the caller discards them. On success, the window's share of
    /// the response budget: the caller drops it once the records are committed. A window that is empty, inverted or
    /// longer than [`DataClient::max_window`] is refused without a request (`Configuration`),
    /// as is one needing more than `max_pages_per_fetch` pages.
    pub async fn fetch_window(
        &self,
        access_token: &SecretString,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        kinds: Option<&[RecordKind]>,
        sink: &mut RecordSink<'_>,
    ) -> Result<WindowShare, FetchError> {
        if end <= start {
            return Err(FetchError::configuration(
                format!("empty or inverted window {start} .. {end}"),
                None,
            ));
        }
        if end - start > self.inner.max_window {
            return Err(FetchError::configuration(
                format!(
                    "window of {}s exceeds the partner's {} days",
                    (end - start).num_seconds(),
                    self.inner.max_window.num_days()
                ),
                None,
            ));
        }
        let mut share = WindowShare::default();
        let inner = &self.inner;
        match inner.kind {
            PartnerKind::Dexcom => {
                dexcom::fetch(inner, access_token, start, end, kinds, &mut share, sink).await
            }
            PartnerKind::Pump => {
                pump::fetch(inner, access_token, start, end, kinds, &mut share, sink).await
            }
        }?;
        Ok(share)
    }

    /// Dexcom's `dataRange` (`None` for partners without one, without a request). `last_sync`
    /// is sent as `lastSyncTime` only when it is less than 30 days before `now` (Tidepool saw
    /// wrong ranges for older values); the partner then reports where data published since
    /// landed. A hint for skipping empty windows: a caller may treat an error as "no hint".
    pub async fn data_range(
        &self,
        access_token: &SecretString,
        last_sync: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<DataRange>, FetchError> {
        match self.inner.kind {
            PartnerKind::Dexcom => dexcom::data_range(&self.inner, access_token, last_sync, now)
                .await
                .map(Some),
            PartnerKind::Pump => Ok(None),
        }
    }
}

impl Inner {
    /// `<base>/<segments…>`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in DataClient::new: the base URL is http(s)")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

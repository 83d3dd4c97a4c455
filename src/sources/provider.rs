/*!
What every REST provider source is made of, whoever the provider: [`ProviderCore`] (HTTP client,
base URL, API key and where requests carry it, symbol book, request budget, WebSocket settings)
and the request patterns several providers share — [`fan_out`] (one request per symbol,
concurrently), [`gather`] (per-symbol answers → quotes, or the first error) and [`paged`]
(history fetched page by page). A provider module keeps only what is its own: endpoints,
parameters, parsing.
*/

use std::future::Future;
use std::sync::Arc;

use reqwest::header::HeaderName;

use super::http::{self, ClockSkew, Fetched};
use super::registry::Provider;
use super::settings::{ApiKey, ProviderSettings, StreamSettings};
use super::stream::StreamPlan;
use super::symbols::SymbolBook;
use super::{RateLimit, SourceError};
use crate::model::{Bar, SymbolId, SymbolTable};

/// Where a provider wants its API key in a REST request.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No key: public market data.
    Keyless,
    /// A query parameter of that name (for providers that take no other form).
    Query(&'static str),
    /// A header of that name carrying `prefix` and the key, marked sensitive.
    Header {
        name: HeaderName,
        prefix: &'static str,
    },
}

/// The parts every REST provider source has, built from its settings.
pub struct ProviderCore {
    name: &'static str,
    client: reqwest::Client,
    base: reqwest::Url,
    key: Option<ApiKey>,
    auth: Auth,
    book: Arc<SymbolBook>,
    rate: RateLimit,
    ws_url: Option<String>,
    stream_timing: StreamSettings,
    skew: ClockSkew,
}

impl ProviderCore {
    /// A provider's client, base URL, key, symbol book and budget (its free tier unless
    /// overridden), from its registry description and its settings.
    ///
    /// # Errors
    /// A missing key (`<PROVIDER>_API_KEY`) when `auth` needs one, or an HTTP client or base URL
    /// that cannot be built.
    pub fn new(
        provider: &'static Provider,
        symbols: &SymbolTable,
        settings: &ProviderSettings,
        auth: Auth,
    ) -> Result<Self, SourceError> {
        let name = provider.name;
        let endpoint = settings.endpoint(name).ok_or(SourceError::Unsupported {
            source_name: name,
            what: "be built without settings (its registry entry declares no environment)",
        })?;
        let key = match auth {
            Auth::Keyless => None,
            Auth::Query(_) | Auth::Header { .. } => {
                let key = endpoint
                    .api_key
                    .clone()
                    .ok_or_else(|| SourceError::Unauthorized {
                        source_name: name,
                        reason: format!("{}_API_KEY is not set", name.to_ascii_uppercase()),
                    })?;
                Some(key)
            }
        };
        Ok(Self {
            name,
            client: http::client(settings.http_timeout_ms).map_err(|e| SourceError::Network {
                source_name: name,
                reason: e.without_url().to_string(),
            })?,
            base: http::base_url(name, &endpoint.base_url)?,
            key,
            auth,
            book: Arc::new(SymbolBook::new(provider, symbols, &settings.symbol_map)),
            rate: endpoint.budget(),
            ws_url: endpoint.ws_url.clone(),
            stream_timing: settings.stream,
            skew: ClockSkew::default(),
        })
    }

    pub fn book(&self) -> &Arc<SymbolBook> {
        &self.book
    }

    pub fn rate(&self) -> RateLimit {
        self.rate
    }

    /// The provider's clock minus ours, measured from its answers' `Date` headers.
    pub fn clock_skew_ms(&self) -> Option<i64> {
        self.skew.get()
    }

    /// The API key, for the few places besides REST requests that need it (stream auth).
    pub fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    /// The configured WebSocket URL, when the provider has a push stream.
    pub fn ws_url(&self) -> Option<&str> {
        self.ws_url.as_deref()
    }

    /// How to run a push stream to `url` (which may carry the key: it is never logged).
    pub fn stream_plan(&self, url: String) -> StreamPlan {
        StreamPlan {
            source_name: self.name,
            url,
            key: self.key.clone(),
            timing: self.stream_timing,
            changes: self.book.symbols().changes(),
        }
    }

    /// The provider's symbol for `id`.
    ///
    /// # Errors
    /// `UnsupportedSymbol` when the provider does not serve it.
    pub fn symbol(&self, id: SymbolId) -> Result<&str, SourceError> {
        self.book
            .provider_symbol(id)
            .ok_or_else(|| SourceError::UnsupportedSymbol {
                source_name: self.name,
                symbol: self.book.generic(id),
            })
    }

    /// GET `base/segments…?query` with the key where the provider wants it. Only transport
    /// failures are errors; the provider's parser reads the status and body.
    ///
    /// # Errors
    /// A key a header cannot carry, a timeout or a network failure (never showing the key).
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Fetched, SourceError> {
        let url = http::endpoint(self.name, &self.base, segments)?;
        let mut request = self.client.get(url).query(query);
        if let Some(key) = &self.key {
            request = match &self.auth {
                Auth::Keyless => request,
                Auth::Query(param) => request.query(&[(*param, key.expose())]),
                Auth::Header { name, prefix } => request.header(
                    name.clone(),
                    http::secret_header(self.name, &format!("{prefix}{}", key.expose()))?,
                ),
            };
        }
        let fetched = http::fetch(self.name, request, self.key.as_ref()).await?;
        if let Some(sample) = fetched.skew_ms {
            self.skew.observe(sample);
        }
        Ok(fetched)
    }
}

/// Runs `one` for every symbol concurrently (sources that quote one symbol per request) and
/// [`gather`]s the answers.
///
/// # Errors
/// The first error, when no symbol was answered.
pub async fn fan_out<'a, F, Fut, T>(symbols: &'a [SymbolId], one: F) -> Result<Vec<T>, SourceError>
where
    F: Fn(SymbolId) -> Fut,
    Fut: Future<Output = Result<Vec<T>, SourceError>> + 'a,
{
    let results = futures::future::join_all(symbols.iter().map(|&s| one(s))).await;
    gather(
        results
            .into_iter()
            .map(|r| r.inspect_err(|e| tracing::debug!(error = %e, "symbol failed"))),
    )
}

/// Per-symbol answers → one answer. Symbols that failed are left out so the collector falls back
/// for them; when none was answered, the first error is the answer.
///
/// # Errors
/// The first error, when no symbol was answered.
pub fn gather<T>(
    answers: impl IntoIterator<Item = Result<Vec<T>, SourceError>>,
) -> Result<Vec<T>, SourceError> {
    let mut answered = Vec::new();
    let mut first_error = None;
    for answer in answers {
        match answer {
            Ok(items) => answered.extend(items),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if answered.is_empty() => Err(e),
        _ => Ok(answered),
    }
}

/// History rows for `[start, end)`, page by page: `page(from)` fetches the rows from `from` on
/// and says where the next page starts (`None`: nothing follows). At most `max_pages` requests;
/// rows are returned as fetched, for [`closed_bars`](super::shape::closed_bars) to shape.
///
/// # Errors
/// The first page that failed.
pub async fn paged<F, Fut>(
    start: i64,
    end: i64,
    max_pages: usize,
    mut page: F,
) -> Result<Vec<Bar>, SourceError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<(Vec<Bar>, Option<i64>), SourceError>>,
{
    let mut rows = Vec::new();
    let mut from = start;
    for _ in 0..max_pages {
        if from >= end {
            break;
        }
        let (page_rows, next) = page(from).await?;
        rows.extend(page_rows);
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(rows)
}

/// Where the page after `rows` (asked from `from`, bars of `step_ms`) starts: after its newest
/// row, when the provider filled it (`full`: more may follow) and that moves forward.
pub fn next_page(rows: &[Bar], full: bool, from: i64, step_ms: i64) -> Option<i64> {
    let next = rows.iter().map(|b| b.ts).max()?.saturating_add(step_ms);
    (full && next > from).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(ts: i64) -> Bar {
        Bar::from_price(ts, 1.0, 1.0)
    }

    #[test]
    fn gather_keeps_answers_and_reports_only_total_failure() {
        let failed = || SourceError::Timeout { source_name: "x" };
        assert_eq!(
            gather([Ok(vec![1]), Err(failed()), Ok(vec![2, 3])]).ok(),
            Some(vec![1, 2, 3])
        );
        assert!(matches!(
            gather::<u8>([Err(failed()), Ok(vec![])]),
            Err(SourceError::Timeout { .. })
        ));
        assert_eq!(gather::<u8>([]).ok(), Some(vec![]));
    }

    #[test]
    fn pages_follow_full_pages_until_the_end() {
        assert_eq!(
            next_page(&[bar(0), bar(60_000)], true, 0, 60_000),
            Some(120_000)
        );
        assert_eq!(next_page(&[bar(0), bar(60_000)], false, 0, 60_000), None);
        assert_eq!(next_page(&[bar(0)], true, 60_000, 60_000), None);
        assert_eq!(next_page(&[], true, 0, 60_000), None);
        let mut asked = Vec::new();
        let rows = futures::executor::block_on(paged(0, 180_000, 10, |from| {
            asked.push(from);
            let rows = vec![bar(from)];
            let next = next_page(&rows, true, from, 60_000);
            async move { Ok((rows, next)) }
        }))
        .expect("pages");
        assert_eq!(asked, [0, 60_000, 120_000]);
        assert_eq!(rows.len(), 3);
        let capped = futures::executor::block_on(paged(0, i64::MAX, 2, |from| async move {
            Ok((vec![bar(from)], Some(from + 1)))
        }))
        .expect("pages");
        assert_eq!(capped.len(), 2);
    }
}

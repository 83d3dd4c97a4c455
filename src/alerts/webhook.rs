/*!
`ALERT_WEBHOOK_URL`: each firing and each resolution POSTed as JSON, off the evaluator's task.

The evaluator hands events over a bounded queue with `try_send` (a full queue drops the event
and counts it in `alert_notifications_dropped_total`), so a slow or dead receiver delays no
evaluation and no tick. This task takes what is waiting — up to [`MAX_PER_POST`] events in one
POST, so an outage that makes a thousand symbols stale is a few messages, not a thousand —
within `ALERT_WEBHOOK_PER_MINUTE` POSTs (a token bucket), and retries a POST that failed for a
reason that may pass (a 5xx, a 429 after its `Retry-After`, a timeout, no connection) up to
`ALERT_WEBHOOK_RETRIES` times with a doubling backoff from [`RETRY_FIRST`]. Other 4xx answers
are not retried.

The body has `text` (Slack, Mattermost) and `content` (Discord, at most 2 000 characters) for
the chat message, and `alerts` with every event's record for programs. The URL is never logged
whole (its path often is the token); `secrets` scrubs it from every log line anyway.
*/

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rules::human;
use super::{AlertRecord, AlertSettings};
use crate::metrics::Metrics;
use crate::sources::RateLimit;
use crate::sources::ratelimit::RateBudget;

/// Events waiting for the webhook at most; beyond, new ones are dropped and counted.
pub const QUEUE: usize = 1_024;

/// Events in one POST at most.
pub const MAX_PER_POST: usize = 20;

/// The wait before the first retry; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Discord refuses a `content` longer than this.
const DISCORD_MAX: usize = 2_000;

/// Whether an alert began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Fired,
    Resolved,
}

/// One event for the webhook.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub record: AlertRecord,
}

/// One event in the body: the record and whether it fired or resolved.
#[derive(Serialize)]
struct Item<'a> {
    status: NoticeKind,
    #[serde(flatten)]
    record: &'a AlertRecord,
}

/// What is POSTed.
#[derive(Serialize)]
struct Payload<'a> {
    text: &'a str,
    content: &'a str,
    /// Which barkeep sent it (its `HTTP_ADDR` and shard).
    instance: &'a str,
    alerts: Vec<Item<'a>>,
}

/// `scheme://host[:port]/…`: a webhook URL as it may be shown.
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or("?"))
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// The secrets in a webhook URL, for `secrets` to scrub: the URL itself, everything after its
/// host, its password, every query value, and every path segment of 8 or more characters with
/// a digit or a capital letter (Slack's, Discord's and Mattermost's tokens, not `services` or
/// `webhooks`).
pub fn secrets_of(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Ok(u) = reqwest::Url::parse(url) else {
        return out;
    };
    let host_at = url.find("://").map_or(0, |i| i + 3);
    if let Some(tail) = url[host_at..].find(['/', '?']).map(|i| &url[host_at + i..])
        && tail.len() > 1
    {
        out.push(tail.to_string());
    }
    out.extend(u.password().map(str::to_string));
    out.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
    out.extend(
        u.path_segments()
            .into_iter()
            .flatten()
            .filter(|s| {
                s.len() >= 8
                    && s.chars()
                        .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            })
            .map(str::to_string),
    );
    out
}

/// The chat line of one event.
fn line(instance: &str, n: &Notice) -> String {
    let r = &n.record;
    match n.kind {
        NoticeKind::Fired => format!(
            "🔴 FIRING [{}] {} {} on barkeep {instance}: {}",
            r.severity.as_str(),
            r.rule.as_str(),
            r.subject,
            r.message
        ),
        NoticeKind::Resolved => format!(
            "✅ RESOLVED {} {} on barkeep {instance} after {}: {}",
            r.rule.as_str(),
            r.subject,
            human(r.resolved_ms.unwrap_or(r.since_ms) - r.since_ms),
            r.message
        ),
    }
}

/// How one POST ended.
enum Outcome {
    Delivered,
    /// May pass: try again, after at least this long.
    Retry {
        reason: String,
        after: Duration,
    },
    /// Will not pass (a 4xx other than 429).
    Refused(String),
}

/// The webhook's sending task.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    instance: String,
    retries: u32,
    budget: RateBudget,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// `None` when no `ALERT_WEBHOOK_URL` is set.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS backend).
    pub fn new(
        settings: &AlertSettings,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, reqwest::Error> {
        let Some(url) = settings.webhook_url.clone() else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.webhook_timeout_ms))
            .user_agent(concat!("barkeep/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let limit = RateLimit {
            per_minute: Some(settings.webhook_per_minute),
            per_day: None,
        };
        Ok(Some(Self {
            client,
            url,
            instance,
            retries: settings.webhook_retries,
            budget: RateBudget::new(limit, tokio::time::Instant::now()),
            metrics,
        }))
    }

    /// Sends what arrives on `rx` until `shutdown` or until the evaluator is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Notice>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_PER_POST);
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                n = rx.recv() => match n {
                    Some(n) => n,
                    None => return,
                },
            };
            batch.clear();
            batch.push(first);
            while batch.len() < MAX_PER_POST {
                match rx.try_recv() {
                    Ok(n) => batch.push(n),
                    Err(_) => break,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.deliver(&batch) => {}
            }
        }
    }

    /// One POST of `batch`, retried while it may pass.
    async fn deliver(&mut self, batch: &[Notice]) {
        let lines: Vec<String> = batch.iter().map(|n| line(&self.instance, n)).collect();
        let text = lines.join("\n");
        let content = if text.chars().count() > DISCORD_MAX {
            let mut cut: String = text.chars().take(DISCORD_MAX - 1).collect();
            cut.push('…');
            cut
        } else {
            text.clone()
        };
        let payload = Payload {
            text: &text,
            content: &content,
            instance: &self.instance,
            alerts: batch
                .iter()
                .map(|n| Item {
                    status: n.kind,
                    record: &n.record,
                })
                .collect(),
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "alert webhook: the payload could not be serialised");
                return;
            }
        };
        let mut backoff = RETRY_FIRST;
        for attempt in 0..=self.retries {
            self.take_token().await;
            if attempt > 0 {
                self.metrics.alert_notification_retries.inc();
            }
            match self.post(body.clone()).await {
                Outcome::Delivered => {
                    self.metrics.alert_notifications.inc();
                    tracing::debug!(events = batch.len(), "alert webhook delivered");
                    return;
                }
                Outcome::Refused(reason) => {
                    self.metrics.alert_notifications_failed.inc();
                    tracing::warn!(url = %shown(&self.url), events = batch.len(), %reason, "alert webhook refused the notification; not retried");
                    return;
                }
                Outcome::Retry { reason, after } => {
                    if attempt == self.retries {
                        self.metrics.alert_notifications_failed.inc();
                        tracing::warn!(url = %shown(&self.url), events = batch.len(), attempts = attempt + 1, %reason, "alert webhook failed; notification dropped after its retries");
                        return;
                    }
                    let wait = backoff.max(after);
                    tracing::debug!(url = %shown(&self.url), %reason, wait_ms = wait.as_millis() as u64, "alert webhook failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Waits for a token of `ALERT_WEBHOOK_PER_MINUTE`.
    async fn take_token(&mut self) {
        loop {
            let now = tokio::time::Instant::now();
            let wall = crate::clock::system_now_ms();
            if self.budget.try_acquire(now, wall, 1) {
                return;
            }
            let wait = self
                .budget
                .wait_for(now, wall, 1)
                .unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }

    async fn post(&self, body: Vec<u8>) -> Outcome {
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Without the URL: it may hold the token.
            Err(e) => {
                return Outcome::Retry {
                    reason: crate::sources::http::error_chain(&e.without_url()),
                    after: Duration::ZERO,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, |s| Duration::from_secs(s.min(300)));
        let said: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let reason = format!("HTTP {status}: {}", said.trim());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry { reason, after }
        } else {
            Outcome::Refused(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_url_shows_only_its_host_and_gives_up_its_tokens() {
        let slack = "https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX";
        assert_eq!(shown(slack), "https://hooks.slack.com/…");
        let s = secrets_of(slack);
        assert!(s.contains(&slack.to_string()));
        assert!(s.contains(&"XXXXXXXXXXXXXXXXXXXXXXXX".to_string()), "{s:?}");
        assert!(!s.contains(&"services".to_string()), "{s:?}");
        let discord = "https://discord.com/api/webhooks/123456789/abcDEF-token_value";
        let s = secrets_of(discord);
        assert!(s.contains(&"abcDEF-token_value".to_string()), "{s:?}");
        assert!(
            s.contains(&"/api/webhooks/123456789/abcDEF-token_value".to_string()),
            "{s:?}"
        );
        assert!(!s.contains(&"webhooks".to_string()), "{s:?}");
        let with_query = "http://127.0.0.1:9000/hook?token=s3cr3t-value";
        assert_eq!(shown(with_query), "http://127.0.0.1:9000/…");
        assert!(secrets_of(with_query).contains(&"s3cr3t-value".to_string()));
    }
}

//! Local stand-ins for the chat services alerts go to: a real HTTP server on
//! `127.0.0.1`, one per test, that answers like Slack, Teams (Workflows),
//! Mattermost or a generic webhook receiver would, and checks every payload
//! against that service's documented structure and limits.
//!
//! ```text
//!                                   ┌─ scripted failure? ─▶ 500/503 · 429 + Retry-After  (attempts only)
//! Driftwarden ──POST──▶ Receiver ───┤
//!                                   └─ validate(kind) ─┬─▶ 400 + reason               (invalid)
//!                                                      └─▶ 2xx like the service       (received)
//! ```
//!
//! The validators are written from the services' documentation, apart from
//! Driftwarden's renderers, so a renderer cannot pass by agreeing with
//! itself. The generic webhook's signature is checked with
//! `notify::sign::verify` under [`ReceiverOptions::webhook_key`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use notify::SinkKind;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The key a webhook receiver verifies with unless told otherwise.
pub const TEST_KEY: &[u8] = b"driftwarden-test-webhook-key";

/// Largest body a receiver accepts.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Slack: most blocks in a message.
const SLACK_MAX_BLOCKS: usize = 50;
/// Slack: longest top-level `text` (longer is truncated by Slack).
const SLACK_MAX_TEXT: usize = 40_000;
/// Slack: longest text of a section, or of any text object.
const SLACK_MAX_SECTION_TEXT: usize = 3000;
/// Slack: longest header text.
const SLACK_MAX_HEADER: usize = 150;
/// Slack: most fields of a section.
const SLACK_MAX_FIELDS: usize = 10;
/// Slack: longest text of a field.
const SLACK_MAX_FIELD_TEXT: usize = 2000;
/// Slack: most elements of a context block.
const SLACK_MAX_CONTEXT_ELEMENTS: usize = 10;
/// Slack: longest `block_id`.
const SLACK_MAX_BLOCK_ID: usize = 255;
/// Slack: the block types Block Kit documents for messages.
const SLACK_BLOCK_TYPES: [&str; 11] = [
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
];

/// Teams: the largest message, in bytes (Teams documents about 28 KB).
const TEAMS_MAX_BYTES: usize = 28_000;
/// Teams: the attachment content type of an Adaptive Card.
const TEAMS_CARD: &str = "application/vnd.microsoft.card.adaptive";
/// Teams: the newest Adaptive Card schema minor version Teams renders (1.x).
const TEAMS_MAX_MINOR: u32 = 5;
/// Teams: card elements an Adaptive Card 1.5 may hold.
const TEAMS_ELEMENTS: [&str; 12] = [
    "ActionSet",
    "ColumnSet",
    "Container",
    "FactSet",
    "Image",
    "ImageSet",
    "Input.ChoiceSet",
    "Input.Text",
    "Input.Toggle",
    "RichTextBlock",
    "Table",
    "TextBlock",
];
/// Teams: card actions.
const TEAMS_ACTIONS: [&str; 5] = [
    "Action.Execute",
    "Action.OpenUrl",
    "Action.ShowCard",
    "Action.Submit",
    "Action.ToggleVisibility",
];

/// Mattermost: the most characters of a post.
const MATTERMOST_MAX_CHARS: usize = 16_383;

/// How a receiver checks what it is sent.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// The generic webhook's shared key.
    pub webhook_key: Vec<u8>,
    /// The generic webhook's replay window, in seconds.
    pub tolerance_secs: i64,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            webhook_key: TEST_KEY.to_vec(),
            tolerance_secs: notify::sign::DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl ReceiverOptions {
    /// Options verifying webhook signatures under `key`.
    pub fn with_key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            webhook_key: key.into(),
            ..Self::default()
        }
    }
}

/// A payload the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body, parsed.
    pub body: Value,
    /// The body as sent.
    pub raw: Bytes,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The request's path.
    pub path: String,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, by the wall clock.
    pub wall: SystemTime,
}

impl Received {
    /// A header's value as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A payload the receiver refused with 400.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// What is wrong with it.
    pub reason: String,
    /// The body as sent.
    pub raw: Bytes,
    /// The request's headers.
    pub headers: HeaderMap,
    /// When it arrived.
    pub at: Instant,
}

/// How the receiver answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid: recorded in [`Receiver::received`].
    Accepted,
    /// Refused with 400: recorded in [`Receiver::invalid`].
    Invalid,
    /// A scripted failure with this status ([`Receiver::fail_next`]).
    Failed(u16),
    /// A scripted 429 with this `Retry-After` ([`Receiver::throttle_next`]).
    Throttled(u64),
}

/// One request, whatever became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When it arrived.
    pub at: Instant,
    /// How it was answered.
    pub outcome: Outcome,
}

/// An answer scripted ahead of the requests.
#[derive(Debug, Clone, Copy)]
enum Scripted {
    Fail(StatusCode),
    Throttle(u64),
}

#[derive(Debug, Default)]
struct Log {
    received: Vec<Received>,
    invalid: Vec<Invalid>,
    attempts: Vec<Attempt>,
    script: VecDeque<Scripted>,
}

#[derive(Debug)]
struct Shared {
    kind: SinkKind,
    options: ReceiverOptions,
    log: Mutex<Log>,
    /// How many payloads were accepted, for [`Receiver::wait_for`].
    accepted: watch::Sender<usize>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A local HTTP server standing in for one chat service. Stops when
/// dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver for `kind` on a free port of 127.0.0.1.
    pub async fn start(kind: SinkKind, options: ReceiverOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding a local port for the receiver")?;
        let addr = listener.local_addr().context("the receiver's address")?;
        let shared = Arc::new(Shared {
            kind,
            options,
            log: Mutex::new(Log::default()),
            accepted: watch::channel(0).0,
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("{kind:?} receiver on {addr} stopped: {err:?}");
            }
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// The service it stands in for.
    pub fn kind(&self) -> SinkKind {
        self.shared.kind
    }

    /// The webhook URL to configure, shaped like the service's own.
    pub fn url(&self) -> String {
        let path = match self.shared.kind {
            SinkKind::Slack => "services/T0TEST/B0TEST/testsecret",
            SinkKind::Teams => "workflows/test/triggers/manual/paths/invoke",
            SinkKind::Mattermost => "hooks/testhook",
            SinkKind::Webhook => "driftwarden/events",
        };
        format!("http://{}/{path}", self.addr)
    }

    /// Payloads accepted so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log().received.clone()
    }

    /// Payloads refused as invalid so far: a test expects none.
    pub fn invalid(&self) -> Vec<Invalid> {
        self.shared.log().invalid.clone()
    }

    /// Requests so far, failed, throttled and invalid ones included.
    pub fn attempts(&self) -> usize {
        self.shared.log().attempts.len()
    }

    /// Every request so far and how it was answered, oldest first.
    pub fn attempt_log(&self) -> Vec<Attempt> {
        self.shared.log().attempts.clone()
    }

    /// Answers the next `n` requests with `status` (500, 503 …) without
    /// reading them.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut log = self.shared.log();
        log.script
            .extend(std::iter::repeat_n(Scripted::Fail(status), n));
    }

    /// Answers the next `n` requests with 429 and `Retry-After:
    /// retry_after_secs`, without reading them.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        let mut log = self.shared.log();
        log.script
            .extend(std::iter::repeat_n(Scripted::Throttle(retry_after_secs), n));
    }

    /// Waits until `n` payloads were accepted in all, and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let mut accepted = self.shared.accepted.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            accepted.wait_for(|count| *count >= n).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(self.received()),
            Ok(Err(_)) => bail!("the {:?} receiver stopped", self.shared.kind),
            Err(_) => {
                let log = self.shared.log();
                let reasons: Vec<&str> = log.invalid.iter().map(|i| i.reason.as_str()).collect();
                bail!(
                    "the {:?} receiver accepted {} of {n} payloads within {timeout:?} \
                     ({} requests; invalid: {reasons:?})",
                    self.shared.kind,
                    log.received.len(),
                    log.attempts.len(),
                )
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let scripted = shared.log().script.pop_front();
    if let Some(scripted) = scripted {
        let (outcome, response) = match scripted {
            Scripted::Fail(status) => (
                Outcome::Failed(status.as_u16()),
                (status, "scripted failure").into_response(),
            ),
            Scripted::Throttle(secs) => (
                Outcome::Throttled(secs),
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, HeaderValue::from(secs))],
                    "rate_limited",
                )
                    .into_response(),
            ),
        };
        shared.log().attempts.push(Attempt { at, outcome });
        return response;
    }

    match validate(shared.kind, &shared.options, &method, &headers, &body) {
        Ok(parsed) => {
            let accepted = {
                let mut log = shared.log();
                log.attempts.push(Attempt {
                    at,
                    outcome: Outcome::Accepted,
                });
                log.received.push(Received {
                    body: parsed,
                    raw: body,
                    headers,
                    path: uri.path().to_owned(),
                    at,
                    wall: SystemTime::now(),
                });
                log.received.len()
            };
            shared.accepted.send_replace(accepted);
            success(shared.kind)
        }
        Err(reason) => {
            let mut log = shared.log();
            log.attempts.push(Attempt {
                at,
                outcome: Outcome::Invalid,
            });
            log.invalid.push(Invalid {
                reason: reason.clone(),
                raw: body,
                headers,
                at,
            });
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

/// What the service answers a valid request with.
fn success(kind: SinkKind) -> Response {
    match kind {
        SinkKind::Teams => StatusCode::ACCEPTED.into_response(),
        SinkKind::Slack | SinkKind::Mattermost | SinkKind::Webhook => {
            (StatusCode::OK, "ok").into_response()
        }
    }
}

/// The parsed body when the request is valid for `kind`, else why not.
fn validate(
    kind: SinkKind,
    options: &ReceiverOptions,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, String> {
    if method != Method::POST {
        return Err(format!("method {method}, not POST"));
    }
    if body.len() > MAX_BODY {
        return Err(format!(
            "body of {} bytes, more than {MAX_BODY}",
            body.len()
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(format!(
            "content type {content_type:?}, not application/json"
        ));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|err| format!("body is not JSON: {err}"))?;
    match kind {
        SinkKind::Slack => slack(&value),
        SinkKind::Teams => teams(&value, body.len()),
        SinkKind::Mattermost => mattermost(&value),
        SinkKind::Webhook => webhook(options, headers, body, &value),
    }?;
    Ok(value)
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// A Slack text object of one of `types`, its text 1 to `max` characters.
fn slack_text(value: &Value, types: &[&str], max: usize, what: &str) -> Result<(), String> {
    let text = object(value, what)?;
    let kind = text.get("type").and_then(Value::as_str).unwrap_or_default();
    if !types.contains(&kind) {
        return Err(format!("{what}: type {kind:?}, not one of {types:?}"));
    }
    if text.contains_key("emoji") && kind != "plain_text" {
        return Err(format!("{what}: emoji is only for plain_text"));
    }
    if text.contains_key("verbatim") && kind != "mrkdwn" {
        return Err(format!("{what}: verbatim is only for mrkdwn"));
    }
    let content = text
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: no text"))?;
    let n = chars(content);
    if n == 0 || n > max {
        return Err(format!("{what}: text of {n} characters, not 1 to {max}"));
    }
    Ok(())
}

/// Slack's incoming webhook message with Block Kit.
fn slack(value: &Value) -> Result<(), String> {
    let message = object(value, "the message")?;
    let text = match message.get("text") {
        None => None,
        Some(Value::String(text)) => Some(text.as_str()),
        Some(_) => return Err("text is not a string".to_owned()),
    };
    let blocks = match message.get("blocks") {
        None => None,
        Some(Value::Array(blocks)) => Some(blocks),
        Some(_) => return Err("blocks is not an array".to_owned()),
    };
    if text.is_none_or(str::is_empty) && blocks.is_none_or(Vec::is_empty) {
        return Err("neither text nor blocks".to_owned());
    }
    if let Some(text) = text
        && chars(text) > SLACK_MAX_TEXT
    {
        return Err(format!("text of {} characters", chars(text)));
    }
    let blocks = blocks.map(Vec::as_slice).unwrap_or_default();
    if blocks.len() > SLACK_MAX_BLOCKS {
        return Err(format!(
            "{} blocks, more than {SLACK_MAX_BLOCKS}",
            blocks.len()
        ));
    }
    for (i, block) in blocks.iter().enumerate() {
        let what = format!("block {i}");
        let fields = object(block, &what)?;
        let kind = fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !SLACK_BLOCK_TYPES.contains(&kind) {
            return Err(format!("{what}: unknown block type {kind:?}"));
        }
        if let Some(id) = fields.get("block_id") {
            let id = id
                .as_str()
                .ok_or(format!("{what}: block_id not a string"))?;
            if chars(id) > SLACK_MAX_BLOCK_ID {
                return Err(format!("{what}: block_id too long"));
            }
        }
        let what = format!("{what} ({kind})");
        match kind {
            "header" => {
                let text = fields.get("text").unwrap_or(&Value::Null);
                slack_text(text, &["plain_text"], SLACK_MAX_HEADER, &what)?;
            }
            "section" => {
                let text = fields.get("text");
                let items = fields.get("fields");
                if text.is_none() && items.is_none() {
                    return Err(format!("{what}: neither text nor fields"));
                }
                if let Some(text) = text {
                    slack_text(
                        text,
                        &["plain_text", "mrkdwn"],
                        SLACK_MAX_SECTION_TEXT,
                        &what,
                    )?;
                }
                if let Some(items) = items {
                    let items = items
                        .as_array()
                        .ok_or(format!("{what}: fields not an array"))?;
                    if items.is_empty() || items.len() > SLACK_MAX_FIELDS {
                        return Err(format!("{what}: {} fields", items.len()));
                    }
                    for (j, item) in items.iter().enumerate() {
                        let what = format!("{what} field {j}");
                        slack_text(item, &["plain_text", "mrkdwn"], SLACK_MAX_FIELD_TEXT, &what)?;
                    }
                }
            }
            "context" => {
                let elements = fields
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or(format!("{what}: no elements"))?;
                if elements.is_empty() || elements.len() > SLACK_MAX_CONTEXT_ELEMENTS {
                    return Err(format!("{what}: {} elements", elements.len()));
                }
                for (j, element) in elements.iter().enumerate() {
                    let what = format!("{what} element {j}");
                    let is_image = element.get("type").and_then(Value::as_str) == Some("image");
                    if is_image {
                        if element.get("alt_text").and_then(Value::as_str).is_none() {
                            return Err(format!("{what}: image without alt_text"));
                        }
                    } else {
                        slack_text(
                            element,
                            &["plain_text", "mrkdwn"],
                            SLACK_MAX_SECTION_TEXT,
                            &what,
                        )?;
                    }
                }
            }
            "divider" => {}
            // Other block types are valid Block Kit; Driftwarden sends none.
            _ => {}
        }
    }
    Ok(())
}

/// A Teams Workflows message carrying Adaptive Cards.
fn teams(value: &Value, size: usize) -> Result<(), String> {
    if size > TEAMS_MAX_BYTES {
        return Err(format!("{size} bytes, more than {TEAMS_MAX_BYTES}"));
    }
    let message = object(value, "the message")?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err("type is not \"message\"".to_owned());
    }
    let attachments = message
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("no attachments")?;
    for (i, attachment) in attachments.iter().enumerate() {
        let what = format!("attachment {i}");
        let fields = object(attachment, &what)?;
        let content_type = fields.get("contentType").and_then(Value::as_str);
        if content_type != Some(TEAMS_CARD) {
            return Err(format!("{what}: contentType {content_type:?}"));
        }
        if !matches!(
            fields.get("contentUrl"),
            None | Some(Value::Null | Value::String(_))
        ) {
            return Err(format!("{what}: contentUrl neither null nor a string"));
        }
        let card = object(fields.get("content").unwrap_or(&Value::Null), &what)?;
        if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
            return Err(format!("{what}: content.type is not AdaptiveCard"));
        }
        let version = card
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let minor = version
            .strip_prefix("1.")
            .and_then(|minor| minor.parse::<u32>().ok());
        if minor.is_none_or(|minor| minor > TEAMS_MAX_MINOR) {
            return Err(format!(
                "{what}: version {version:?}, not 1.0 to 1.{TEAMS_MAX_MINOR}"
            ));
        }
        let body = card
            .get("body")
            .and_then(Value::as_array)
            .ok_or(format!("{what}: no body"))?;
        for (j, element) in body.iter().enumerate() {
            teams_element(element, &format!("{what} body {j}"))?;
        }
        if let Some(actions) = card.get("actions") {
            let actions = actions
                .as_array()
                .ok_or(format!("{what}: actions not an array"))?;
            for (j, action) in actions.iter().enumerate() {
                teams_action(action, &format!("{what} action {j}"))?;
            }
        }
    }
    Ok(())
}

fn teams_element(element: &Value, what: &str) -> Result<(), String> {
    let fields = object(element, what)?;
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !TEAMS_ELEMENTS.contains(&kind) {
        return Err(format!("{what}: unknown element {kind:?}"));
    }
    match kind {
        "TextBlock" if fields.get("text").and_then(Value::as_str).is_none() => {
            return Err(format!("{what}: TextBlock without text"));
        }
        "FactSet" => {
            let facts = fields
                .get("facts")
                .and_then(Value::as_array)
                .ok_or(format!("{what}: FactSet without facts"))?;
            for fact in facts {
                let title = fact.get("title").and_then(Value::as_str);
                let value = fact.get("value").and_then(Value::as_str);
                if title.is_none() || value.is_none() {
                    return Err(format!("{what}: a fact without title or value"));
                }
            }
        }
        "Container" => {
            let items = fields
                .get("items")
                .and_then(Value::as_array)
                .ok_or(format!("{what}: Container without items"))?;
            for (j, item) in items.iter().enumerate() {
                teams_element(item, &format!("{what} item {j}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn teams_action(action: &Value, what: &str) -> Result<(), String> {
    let fields = object(action, what)?;
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !TEAMS_ACTIONS.contains(&kind) {
        return Err(format!("{what}: unknown action {kind:?}"));
    }
    if kind == "Action.OpenUrl" {
        let url = fields
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("{what}: url {url:?} is not http(s)"));
        }
    }
    Ok(())
}

/// A Mattermost incoming webhook post.
fn mattermost(value: &Value) -> Result<(), String> {
    let post = object(value, "the post")?;
    let text = match post.get("text") {
        None => "",
        Some(Value::String(text)) => text.as_str(),
        Some(_) => return Err("text is not a string".to_owned()),
    };
    let attachments = match post.get("attachments") {
        None => &[][..],
        Some(Value::Array(attachments)) => attachments.as_slice(),
        Some(_) => return Err("attachments is not an array".to_owned()),
    };
    if text.is_empty() && attachments.is_empty() {
        return Err("neither text nor attachments".to_owned());
    }
    let mut total = chars(text);
    for (i, attachment) in attachments.iter().enumerate() {
        let what = format!("attachment {i}");
        let fields = object(attachment, &what)?;
        let fallback = fields.get("fallback").and_then(Value::as_str);
        if fallback.is_none_or(str::is_empty) {
            return Err(format!("{what}: no fallback"));
        }
        for key in [
            "fallback",
            "pretext",
            "text",
            "title",
            "footer",
            "author_name",
        ] {
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => total += chars(s),
                Some(_) => return Err(format!("{what}: {key} is not a string")),
            }
        }
        if let Some(color) = fields.get("color").and_then(Value::as_str) {
            let hex = color
                .strip_prefix('#')
                .is_some_and(|hex| hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()));
            if !hex && !["good", "warning", "danger"].contains(&color) {
                return Err(format!("{what}: color {color:?}"));
            }
        }
        for key in ["title_link", "author_link", "image_url", "thumb_url"] {
            if let Some(link) = fields.get(key) {
                let link = link.as_str().unwrap_or_default();
                if !(link.starts_with("https://") || link.starts_with("http://")) {
                    return Err(format!("{what}: {key} {link:?} is not http(s)"));
                }
            }
        }
        if let Some(items) = fields.get("fields") {
            let items = items
                .as_array()
                .ok_or(format!("{what}: fields not an array"))?;
            for (j, item) in items.iter().enumerate() {
                let what = format!("{what} field {j}");
                let item = object(item, &what)?;
                let title = item
                    .get("title")
                    .and_then(Value::as_str)
                    .ok_or(format!("{what}: no title"))?;
                let value = match item.get("value") {
                    Some(Value::String(s)) => chars(s),
                    Some(Value::Number(n)) => n.to_string().len(),
                    _ => return Err(format!("{what}: value neither string nor number")),
                };
                if !matches!(item.get("short"), None | Some(Value::Bool(_))) {
                    return Err(format!("{what}: short is not a boolean"));
                }
                total += chars(title) + value;
            }
        }
    }
    if let Some(props) = post.get("props") {
        object(props, "props")?;
    }
    if total > MATTERMOST_MAX_CHARS {
        return Err(format!(
            "{total} characters, more than {MATTERMOST_MAX_CHARS}"
        ));
    }
    Ok(())
}

/// Driftwarden's generic webhook: signed, schema 1.
fn webhook(
    options: &ReceiverOptions,
    headers: &HeaderMap,
    raw: &[u8],
    value: &Value,
) -> Result<(), String> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let timestamp = header_text(notify::sign::TIMESTAMP_HEADER)?;
    let signature = header_text(notify::sign::SIGNATURE_HEADER)?;
    let delivery = header_text(notify::sign::DELIVERY_HEADER)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    notify::sign::verify(
        &options.webhook_key,
        timestamp,
        signature,
        raw,
        now,
        options.tolerance_secs,
    )
    .map_err(|err| format!("signature refused: {err}"))?;

    let body = object(value, "the body")?;
    if body.get("schema").and_then(Value::as_u64) != Some(1) {
        return Err("schema is not 1".to_owned());
    }
    let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
    if id.is_empty() || id != delivery {
        return Err(format!("id {id:?} is not the delivery header {delivery:?}"));
    }
    let alert = |value: Option<&Value>, what: &str| -> Result<(), String> {
        let alert = object(value.unwrap_or(&Value::Null), what)?;
        for key in ["drift_seq", "object", "severity", "summary", "action"] {
            if !alert.contains_key(key) {
                return Err(format!("{what}: no {key}"));
            }
        }
        Ok(())
    };
    match body.get("type").and_then(Value::as_str) {
        Some("alert") => alert(body.get("alert"), "alert"),
        Some("follow_up") => {
            let follow_up = object(body.get("follow_up").unwrap_or(&Value::Null), "follow_up")?;
            for key in ["drift_seq", "object", "action"] {
                if !follow_up.contains_key(key) {
                    return Err(format!("follow_up: no {key}"));
                }
            }
            Ok(())
        }
        Some("digest") => {
            let alerts = body
                .get("alerts")
                .and_then(Value::as_array)
                .ok_or("digest: no alerts")?;
            if body.get("count").and_then(Value::as_u64) != Some(alerts.len() as u64) {
                return Err("digest: count is not the number of alerts".to_owned());
            }
            for (i, item) in alerts.iter().enumerate() {
                alert(Some(item), &format!("digest alert {i}"))?;
            }
            Ok(())
        }
        other => Err(format!("unknown type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use model::AlertAction;
    use notify::Message;
    use serde_json::json;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn post(
        receiver: &Receiver,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = reqwest::Client::new()
            .post(receiver.url())
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        Ok(request.send().await?)
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    }

    fn alert(seq: u64, text: &str) -> model::Alert {
        let mut alert: model::Alert = serde_json::from_value(json!({
            "drift_seq": seq,
            "observed_at": "2026-05-04T12:30:00Z",
            "severity": "high",
            "verdict": "drift_out_of_band",
            "summary": "drift(out_of_band: /spec/replicas)",
            "object": format!("prod/apps/Deployment/team-{}/web", seq % 5),
            "kind": "Deployment",
            "namespace": format!("team-{}", seq % 5),
            "actor": "alice",
            "actor_source": "managed_fields",
            "diff": [{ "path": "/spec/replicas", "expected": "3", "live": "5" }],
            "expected": {
                "id": "0123456789abcdef0123456789abcdef01234567",
                "time": "2026-05-01T09:00:00Z",
                "author": "Bob <bob@example.com>",
                "summary": "Scale web to 3",
                "refs": ["JIRA-123"],
            },
            "action": { "action": "reverted", "after_ms": 230 },
            "link": "https://dw.example/h",
        }))
        .expect("an alert");
        if !text.is_empty() {
            alert.summary = text.to_owned();
            alert.object = text.to_owned();
            alert.actor = text.to_owned();
        }
        alert
    }

    #[tokio::test]
    async fn slack_payload_over_the_block_limit_is_refused() -> anyhow::Result<()> {
        let receiver = Receiver::start(SinkKind::Slack, ReceiverOptions::default()).await?;
        let block = json!({ "type": "divider" });
        let too_many = json!({ "text": "x", "blocks": vec![block; 51] });
        let response = post(&receiver, too_many.to_string().as_bytes(), &[]).await?;
        assert_eq!(response.status(), 400);
        let long_header = json!({ "blocks": [{
            "type": "header", "text": { "type": "plain_text", "text": "h".repeat(151) },
        }] });
        let response = post(&receiver, long_header.to_string().as_bytes(), &[]).await?;
        assert_eq!(response.status(), 400);
        let fine = json!({ "text": "hello", "blocks": [{
            "type": "section", "text": { "type": "mrkdwn", "text": "*hi*" },
        }] });
        let response = post(&receiver, fine.to_string().as_bytes(), &[]).await?;
        assert_eq!(response.status(), 200);

        assert_eq!(receiver.attempts(), 3);
        assert_eq!(receiver.invalid().len(), 2);
        assert!(receiver.invalid()[0].reason.contains("51 blocks"));
        assert_eq!(receiver.wait_for(1, WAIT).await?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn mattermost_post_over_the_length_limit_is_refused() -> anyhow::Result<()> {
        let receiver = Receiver::start(SinkKind::Mattermost, ReceiverOptions::default()).await?;
        let long = json!({ "text": "x".repeat(16_384) });
        let response = post(&receiver, long.to_string().as_bytes(), &[]).await?;
        assert_eq!(response.status(), 400);
        let fine = json!({ "text": "x".repeat(16_383) });
        assert_eq!(
            post(&receiver, fine.to_string().as_bytes(), &[])
                .await?
                .status(),
            200
        );
        Ok(())
    }

    #[tokio::test]
    async fn signed_webhook_is_accepted_and_tampered_one_refused() -> anyhow::Result<()> {
        let receiver = Receiver::start(SinkKind::Webhook, ReceiverOptions::with_key("k")).await?;
        let body = json!({
            "schema": 1, "id": "dw-1-webhook", "type": "follow_up",
            "follow_up": { "drift_seq": 1, "object": "o", "action": { "action": "will_revert" } },
        })
        .to_string();
        let headers = notify::sign::headers(&[b"k"], now(), body.as_bytes(), "dw-1-webhook");
        assert_eq!(
            post(&receiver, body.as_bytes(), &headers).await?.status(),
            200
        );

        let tampered = body.replace("will_revert", "audit_only");
        let response = post(&receiver, tampered.as_bytes(), &headers).await?;
        assert_eq!(response.status(), 400);
        let stale = notify::sign::headers(&[b"k"], now() - 3600, body.as_bytes(), "dw-1-webhook");
        assert_eq!(
            post(&receiver, body.as_bytes(), &stale).await?.status(),
            400
        );

        assert_eq!(receiver.received().len(), 1);
        let reasons: Vec<String> = receiver.invalid().into_iter().map(|i| i.reason).collect();
        assert!(reasons[0].contains("signature refused"), "{reasons:?}");
        assert!(reasons[1].contains("more than 300 s"), "{reasons:?}");
        Ok(())
    }

    #[tokio::test]
    async fn scripted_failures_are_attempts_not_receipts() -> anyhow::Result<()> {
        let receiver = Receiver::start(SinkKind::Teams, ReceiverOptions::default()).await?;
        receiver.fail_next(1, 503);
        receiver.throttle_next(1, 7);
        let body = notify::format::render(
            SinkKind::Teams,
            &Message::Alert(Box::new(alert(1, ""))),
            "id",
        );
        let body = body.to_string();
        assert_eq!(post(&receiver, body.as_bytes(), &[]).await?.status(), 503);
        let throttled = post(&receiver, body.as_bytes(), &[]).await?;
        assert_eq!(throttled.status(), 429);
        assert_eq!(
            throttled
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        assert_eq!(post(&receiver, body.as_bytes(), &[]).await?.status(), 202);

        assert_eq!(receiver.attempts(), 3);
        let outcomes: Vec<Outcome> = receiver.attempt_log().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Failed(503),
                Outcome::Throttled(7),
                Outcome::Accepted
            ]
        );
        assert_eq!(receiver.wait_for(1, WAIT).await?.len(), 1);
        assert!(
            receiver
                .wait_for(2, Duration::from_millis(50))
                .await
                .is_err()
        );
        Ok(())
    }

    /// Driftwarden's own renderers, checked by these independent validators.
    #[tokio::test]
    async fn rendered_messages_pass_every_receiver() -> anyhow::Result<()> {
        let hostile = "<!channel> <https://evil|click> *bold* <script> ".repeat(300);
        let messages = [
            Message::Alert(Box::new(alert(1, ""))),
            Message::Alert(Box::new(alert(2, &hostile))),
            Message::FollowUp {
                drift_seq: 1,
                object: "prod/apps/Deployment/team-a/web".to_owned(),
                action: AlertAction::Reverted { after_ms: 230 },
                link: Some("https://dw.example/h".to_owned()),
            },
            Message::Digest((0..500).map(|seq| alert(seq, "")).collect()),
            Message::Digest((0..500).map(|seq| alert(seq, &hostile[..2000])).collect()),
        ];
        for kind in [
            SinkKind::Slack,
            SinkKind::Teams,
            SinkKind::Mattermost,
            SinkKind::Webhook,
        ] {
            let receiver = Receiver::start(kind, ReceiverOptions::default()).await?;
            for (i, message) in messages.iter().enumerate() {
                let id = format!("dw-{i}-{kind:?}");
                let body = serde_json::to_vec(&notify::format::render(kind, message, &id))?;
                let headers = notify::sign::headers(&[TEST_KEY], now(), &body, &id);
                let status = post(&receiver, &body, &headers).await?.status();
                assert!(status.is_success(), "{kind:?} message {i}: {status}");
            }
            let reasons: Vec<String> = receiver.invalid().into_iter().map(|i| i.reason).collect();
            assert!(reasons.is_empty(), "{kind:?}: {reasons:?}");
            receiver.wait_for(messages.len(), WAIT).await?;
        }
        Ok(())
    }
}

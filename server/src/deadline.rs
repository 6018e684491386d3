//! Request deadlines: a request stops its work once its deadline passes, instead of finishing
//! work nobody waits for. The deadline is the earlier of the client's (gRPC `grpc-timeout`)
//! and the server's `request_timeout_seconds`; it travels with the request's task as a
//! task-local, so the blocking store and index work that every handler runs through checks it
//! before it starts and between stages ([`check`]), without threading it through every call.
//! A request past its deadline is answered DEADLINE_EXCEEDED and counted
//! (`memd_deadline_exceeded_total{method}`).
//!
//! What a write already handed to the store is not undone: it commits (or not) as if the
//! connection had dropped, and a retry with the same client token finds it.

use crate::error::{Result, ServiceError};
use futures::future::BoxFuture;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tonic::codegen::http;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// RPCs the server's own limit does not apply to (a client deadline still does): backups copy
/// the whole store and may rightly take longer.
const NO_SERVER_LIMIT: &[&str] = &["/memd.v1.ControlService/CreateBackup"];

/// The current request's deadline, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Fails with DEADLINE_EXCEEDED when `deadline` has passed (`what`: the work not started).
pub fn check_at(deadline: Option<Instant>, what: &str) -> Result<()> {
    match deadline {
        Some(deadline) if Instant::now() >= deadline => Err(ServiceError::DeadlineExceeded(
            format!("the request's deadline passed before {what}"),
        )),
        _ => Ok(()),
    }
}

/// [`check_at`] with the current request's deadline.
pub fn check(what: &str) -> Result<()> {
    check_at(current(), what)
}

/// Runs `work` with `deadline` as its task's deadline (for work re-entering a request's
/// context on another task, and for adapters that are not gRPC).
pub async fn scope<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, work).await,
        None => work.await,
    }
}

/// Runs `work` under a deadline `limit` from now (`None`: no deadline): `Err` when it passed
/// first, and `work` is dropped where it stands.
pub async fn run<F: Future>(limit: Option<Duration>, work: F) -> Result<F::Output> {
    // A limit too far off to be an instant (99999999H is 11,000 years) is no limit.
    let Some((limit, deadline)) = limit.and_then(|l| Some((l, Instant::now().checked_add(l)?)))
    else {
        return Ok(work.await);
    };
    tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, work))
        .await
        .map_err(|_| {
            ServiceError::DeadlineExceeded(format!(
                "the request took longer than its deadline ({} ms)",
                limit.as_millis()
            ))
        })
}

/// A request's limit: the earlier of the client's `grpc-timeout` (ignored when malformed)
/// and the server's.
pub fn request_limit(
    grpc_timeout: Option<&http::HeaderValue>,
    server: Option<Duration>,
) -> Option<Duration> {
    let client = grpc_timeout
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match (client, server) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => c.or(s),
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Tower layer giving every gRPC request its deadline (see the module docs).
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    /// The server's own limit (`request_timeout_seconds`; `None`: only clients' deadlines).
    pub limit: Option<Duration>,
    /// `memd_deadline_exceeded_total{method}`.
    pub exceeded: prometheus::IntCounterVec,
}

impl DeadlineLayer {
    pub fn new(limit: Option<Duration>) -> Self {
        let exceeded = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "memd_deadline_exceeded_total",
                "Requests whose deadline (the client's grpc-timeout or request_timeout_seconds) passed before they finished; their work stopped",
            ),
            &["method"],
        )
        .expect("valid metric");
        Self { limit, exceeded }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadlines {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadlines<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Deadlines<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let server = self
            .layer
            .limit
            .filter(|_| !NO_SERVER_LIMIT.contains(&path.as_str()));
        let limit = request_limit(request.headers().get("grpc-timeout"), server);
        let work = self.inner.call(request);
        let exceeded = self.layer.exceeded.clone();
        let started = std::time::Instant::now();
        Box::pin(async move {
            // One label per RPC: paths come from the fixed service definitions, and anything
            // else (unknown paths) shares one.
            let count = || {
                let method = if path.starts_with("/memd.v1.") {
                    path.as_str()
                } else {
                    "other"
                };
                exceeded.with_label_values(&[method]).inc();
            };
            match run(limit, work).await {
                Ok(Ok(response)) => {
                    // A handler that stopped at a deadline check answers the error itself.
                    let code = tonic::Code::DeadlineExceeded as i32;
                    if response.headers().get("grpc-status").map(|v| v.as_bytes())
                        == Some(code.to_string().as_bytes())
                    {
                        count();
                    }
                    // A quota refusal waits out its delay here, where the time left before
                    // the deadline is known.
                    if let Some(delay) = crate::auth::retry_after(
                        response.headers().get(crate::auth::RETRY_AFTER_HEADER),
                    ) {
                        let left = limit.map(|l| l.saturating_sub(started.elapsed()));
                        crate::auth::hold(delay, left).await;
                    }
                    Ok(response)
                }
                Ok(Err(err)) => Err(err),
                Err(err) => {
                    count();
                    Ok(tonic::Status::from(err).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_of_the_client_and_the_server_limit_applies() {
        let header = |v: &str| http::HeaderValue::from_str(v).unwrap();
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            request_limit(Some(&header("5S")), minute),
            Some(Duration::from_secs(5))
        );
        assert_eq!(request_limit(Some(&header("2H")), minute), minute);
        assert_eq!(
            request_limit(Some(&header("2H")), None),
            Some(Duration::from_secs(7200))
        );
        // A malformed header is ignored, not an error.
        assert_eq!(request_limit(Some(&header("soon")), minute), minute);
        assert_eq!(request_limit(None, None), None);
    }

    #[tokio::test]
    async fn a_limit_too_far_off_for_an_instant_is_no_limit() {
        let limit = Some(Duration::from_secs(u64::MAX));
        assert_eq!(run(limit, async { 7 }).await.unwrap(), 7);
    }

    #[test]
    fn grpc_timeouts_parse_like_the_spec_says() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "123456789S",
            "-1S",
            "1.5S",
            "五S",
            "1五",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn work_past_its_deadline_stops_and_checks_fail() {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let err = run(Some(Duration::from_millis(20)), async {
            assert!(check("the first stage").is_ok());
            tokio::time::sleep(Duration::from_secs(5)).await;
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ServiceError::DeadlineExceeded(_)), "{err:?}");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

        let past = Some(Instant::now() - Duration::from_millis(1));
        let err = check_at(past, "the search").unwrap_err();
        assert!(err.to_string().contains("before the search"), "{err}");
        assert!(check_at(None, "anything").is_ok());
        assert!(check("outside a request").is_ok());
    }
}

//! A client's deadline ends its RPC with DEADLINE_EXCEEDED.
//!
//! tonic enforces the `grpc-timeout` header itself but answers CANCELLED ("Timeout
//! expired") when it fires, so a client whose own timer had not fired yet saw
//! CANCELLED (kubelet retries those differently). This layer sits inside tonic's and
//! ends the call a little earlier, with the code the gRPC spec gives an expired
//! deadline. Like tonic's, it bounds the call until its response headers: a
//! server-streaming RPC's stream is not cut.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// How much earlier than tonic's own timer this one fires. Both run on tokio's
/// millisecond timer wheel and tonic's started first, so two ticks keep ours first.
const MARGIN: Duration = Duration::from_millis(2);

/// Adds [`Deadline`] to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// See the module comment.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_timeout(v.as_bytes()));
        let call = self.inner.call(req);
        let Some(timeout) = timeout else {
            return Box::pin(call);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout.saturating_sub(MARGIN), call).await {
                Ok(result) => result,
                Err(_) => Ok(expired(timeout).into_http()),
            }
        })
    }
}

/// The status a call whose client's deadline (`timeout`) passed ends with.
pub(crate) fn expired(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the client's deadline ({timeout:?}) passed before the call finished"
    ))
}

/// The client's deadline of a server-streaming call, from its `grpc-timeout`: the
/// layer above stops at the response headers, so a stream that must end at the
/// deadline (PullImageProgress, which pulls as PullImage does) bounds itself with
/// this, [`MARGIN`] early as the layer is.
pub(crate) fn stream_deadline(
    metadata: &tonic::metadata::MetadataMap,
) -> Option<(Duration, Duration)> {
    let timeout = parse_timeout(metadata.get("grpc-timeout")?.as_bytes())?;
    Some((timeout, timeout.saturating_sub(MARGIN)))
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H M S m u n), as the gRPC
/// HTTP/2 spec defines it; None for anything else (tonic then ignores it too).
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        let table: &[(&str, Option<Duration>)] = &[
            ("1m", Some(Duration::from_millis(1))),
            ("5S", Some(Duration::from_secs(5))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("250u", Some(Duration::from_micros(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None),
            ("m", None),
            ("5", None),
            ("5x", None),
            ("-5m", None),
            ("", None),
        ];
        for (v, want) in table {
            assert_eq!(parse_timeout(v.as_bytes()), *want, "{v:?}");
        }
    }
}

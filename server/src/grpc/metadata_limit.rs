//! A bound on request metadata (HTTP/2 headers) answered with a gRPC status on that call.
//!
//! Left to the HTTP/2 stack, a header block over its limit gets a bare HTTP 431 (the client
//! sees UNKNOWN), and one far over it a GOAWAY that fails every call sharing the connection.
//! So the stack's limit is set well above memd's ([`TRANSPORT_HEADER_LIMIT`]), and this layer
//! refuses anything over [`MAX_METADATA_BYTES`] with INVALID_ARGUMENT naming the largest
//! header, touching nothing else on the connection.

use futures::future::BoxFuture;
use std::task::{Context, Poll};
use tonic::codegen::http;

/// Most metadata a call may carry: names, values and 32 bytes per entry, counted as HTTP/2's
/// SETTINGS_MAX_HEADER_LIST_SIZE counts them (RFC 9113, 6.5.2).
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The HTTP/2 stack's own limit (advertised as SETTINGS_MAX_HEADER_LIST_SIZE). Between
/// the two limits calls get a gRPC status; past this one the stack answers as HTTP/2 does.
pub const TRANSPORT_HEADER_LIMIT: u32 = 256 * 1024;

/// Tower layer applying [`MAX_METADATA_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataLimitLayer;

impl<S> tower::Layer<S> for MetadataLimitLayer {
    type Service = MetadataLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetadataLimit { inner }
    }
}

/// See [`MetadataLimitLayer`].
#[derive(Debug, Clone)]
pub struct MetadataLimit<S> {
    inner: S,
}

/// The size of `headers` as HTTP/2 counts it, and the largest entry's name and size.
fn measure(headers: &http::HeaderMap) -> (usize, Option<(&str, usize)>) {
    let mut total = 0;
    let mut largest: Option<(&str, usize)> = None;
    for (name, value) in headers {
        let size = name.as_str().len() + value.len() + 32;
        total += size;
        if largest.is_none_or(|(_, most)| size > most) {
            largest = Some((name.as_str(), size));
        }
    }
    (total, largest)
}

impl<S, B> tower::Service<http::Request<B>> for MetadataLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (total, largest) = measure(request.headers());
        if total > MAX_METADATA_BYTES {
            let (name, size) = largest.unwrap_or(("", 0));
            let status = tonic::Status::invalid_argument(format!(
                "request metadata is {total} bytes, over the limit of {MAX_METADATA_BYTES} (largest: {name}, {size} bytes)"
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_like_http2() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "x".repeat(100).parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        let (total, largest) = measure(&headers);
        assert_eq!(total, (13 + 100 + 32) + (2 + 8 + 32));
        assert_eq!(largest, Some(("authorization", 145)));
    }
}

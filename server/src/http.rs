//! memd's HTTP listener (`http_listen`): the AgentCore REST API and, at `/mcp`, the Model
//! Context Protocol's Streamable HTTP transport. Their paths do not overlap: `/mcp` goes to
//! MCP, everything else to the REST router (which answers unknown paths itself).

use crate::{mcp, rest};
use axum::body::Body;
use http::Request;

/// Serves both APIs on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    rest: rest::RestApi,
    mcp: mcp::http::Endpoint,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::any(move |request: Request<Body>| {
                let mcp = mcp.clone();
                async move { mcp.handle(request).await }
            }),
        )
        .fallback(move |request: Request<Body>| {
            let rest = rest.clone();
            async move { rest.handle(request).await }
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

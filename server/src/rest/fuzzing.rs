//! Fuzz entry points for the AgentCore REST API (see `crate::fuzzing`): the SigV4
//! `Authorization` header, request routing (method and raw path), and a CreateEvent body
//! through its conversion to the gRPC request and that request's checks.

use http::Method;

/// An `Authorization` header value.
pub fn authorization(data: &[u8]) {
    let _ = super::sigv4::parse_authorization(&String::from_utf8_lossy(data));
}

/// A raw request path under each method.
pub fn route(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        let _ = super::router::route(&method, &path);
    }
    let _ = super::router::decode(&path);
}

/// A CreateEvent JSON body.
pub fn create_event_body(data: &[u8]) {
    if let Ok(request) = super::events::create_event_request("mem-1234567890".into(), data) {
        crate::grpc::fuzzing::check_create_event(request);
    }
}

//! Authentication and authorisation. A request's `authorization: Bearer <secret>` header is
//! resolved once, by the interceptor on every service, into a [`Principal`] stored in the
//! request's extensions; each handler then checks the principal against the resource it
//! resolved (see [`policy`]). Missing principal means denied: the path fails closed.

mod keys;
mod limits;
mod policy;

pub use keys::{AuthInterceptor, AuthMode, Authenticator};
pub use limits::{LimitSettings, Limits};
pub use policy::Principal;

use crate::error::{Result, ServiceError};

/// The principal the interceptor attached to a request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ServiceError::Unauthenticated("request was not authenticated".into()))
}

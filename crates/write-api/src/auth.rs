//! Bearer-token authentication for every admin route.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured token without stopping at the first match, so neither the
//! comparison nor the token's length leaks through timing.

use actix_web::{
    ResponseError,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use service::http::ApiError;

/// The accepted tokens, as digests.
#[derive(Clone)]
pub struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    pub fn new(tokens: &[String]) -> Self {
        Self(tokens.iter().map(|t| digest(t.as_bytes())).collect())
    }

    /// Whether `candidate` is one of the tokens.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let candidate = digest(candidate);
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, t| {
                found | t.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Extracts the token from `Authorization: Bearer <token>`. Two
/// `Authorization` headers are refused: which one a proxy or a server reads
/// is not agreed on, so neither is trusted.
fn bearer(req: &ServiceRequest) -> Option<&[u8]> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// Middleware: 401 unless the request carries an accepted bearer token.
///
/// The 401 is answered here, not returned as an `Err`: an error leaving a
/// middleware skips the outer middlewares' work on the answer (the
/// scaffold's `X-Request-Id`).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let ok = match req.app_data::<web::Data<Tokens>>() {
        Some(tokens) => bearer(&req).is_some_and(|t| tokens.accepts(t)),
        None => false,
    };
    if !ok {
        return Ok(req
            .into_response(ApiError::Unauthorized.error_response())
            .map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let tokens = Tokens::new(&["alpha".to_owned(), "beta".to_owned()]);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"beta"));
        assert!(!tokens.accepts(b"alph"));
        assert!(!tokens.accepts(b"alphaa"));
        assert!(!tokens.accepts(b""));
    }
}

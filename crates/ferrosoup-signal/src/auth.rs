//! Access tokens: HS256 JWTs whose claims say who may join which room and do what
//! (PROTOCOL.md, Security).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::SignalError;

/// The grants of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The peer id the token is for.
    pub sub: String,
    /// The only room it may join.
    pub room: String,
    /// May produce media.
    #[serde(default)]
    pub can_publish: bool,
    /// May consume media.
    #[serde(default)]
    pub can_subscribe: bool,
    /// May produce data.
    #[serde(default)]
    pub can_publish_data: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Checks a token's signature and expiry; 401 when it fails.
pub fn verify(token: &str, secret: &str) -> Result<Claims, SignalError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| SignalError::unauthorized(format!("invalid token: {e}")))
}

/// Signs claims into a token (for the `ferrosoup token` development command and tests).
pub fn mint(claims: &Claims, secret: &str) -> Result<String, SignalError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| SignalError::internal(format!("cannot sign token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrosoup_proto::signaling::ErrorCode;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            room: "r1".into(),
            can_publish: true,
            can_subscribe: false,
            can_publish_data: false,
            exp,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn round_trip() {
        let c = claims(now() + 60);
        let token = mint(&c, "s3cret").unwrap();
        assert_eq!(verify(&token, "s3cret").unwrap(), c);
    }

    #[test]
    fn wrong_secret_expired_and_garbage_are_401() {
        let token = mint(&claims(now() + 60), "s3cret").unwrap();
        assert_eq!(
            verify(&token, "other").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let old = mint(&claims(now() - 3600), "s3cret").unwrap();
        assert_eq!(
            verify(&old, "s3cret").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            verify("not.a.jwt", "s3cret").unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        // An unsigned token claiming alg "none" must not pass.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = "eyJzdWIiOiJhIiwicm9vbSI6InIiLCJleHAiOjQxMDI0NDQ4MDB9";
        assert_eq!(
            verify(&format!("{header}.{body}."), "s3cret")
                .unwrap_err()
                .code,
            ErrorCode::Unauthorized
        );
    }
}

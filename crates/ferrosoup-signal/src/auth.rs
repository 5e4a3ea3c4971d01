//! Access tokens: HS256 JWTs whose claims say who may join which room and do what
//! (PROTOCOL.md, Security).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenScope;
use crate::error::SignalError;

/// Shortest accepted `AUTH_SECRET`, in bytes: an HS256 key shorter than its 32-byte output
/// can be guessed offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`], with a message that says why.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "AUTH_SECRET is {} bytes; it must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)",
            secret.len()
        ));
    }
    Ok(())
}

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
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Audience (checked when the server has `AUTH_AUDIENCE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer (checked when the server has `AUTH_ISSUER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Checks a token's signature, expiry, not-before time and, when `scope` names them, its
/// audience and issuer; 401 when it fails.
pub fn verify(token: &str, secret: &str, scope: &TokenScope) -> Result<Claims, SignalError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &scope.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &scope.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
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
            nbf: None,
            aud: None,
            iss: None,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn open() -> TokenScope {
        TokenScope::default()
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
        let token = mint(&c, SECRET).unwrap();
        assert_eq!(verify(&token, SECRET, &open()).unwrap(), c);
    }

    #[test]
    fn wrong_secret_expired_and_garbage_are_401() {
        let token = mint(&claims(now() + 60), SECRET).unwrap();
        assert_eq!(
            verify(&token, "other", &open()).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        let old = mint(&claims(now() - 3600), SECRET).unwrap();
        assert_eq!(
            verify(&old, SECRET, &open()).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            verify("not.a.jwt", SECRET, &open()).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        // An unsigned token claiming alg "none" must not pass.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = "eyJzdWIiOiJhIiwicm9vbSI6InIiLCJleHAiOjQxMDI0NDQ4MDB9";
        assert_eq!(
            verify(&format!("{header}.{body}."), SECRET, &open())
                .unwrap_err()
                .code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn not_before_is_checked() {
        let mut early = claims(now() + 3600);
        early.nbf = Some(now() + 600);
        let token = mint(&early, SECRET).unwrap();
        let e = verify(&token, SECRET, &open()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.reason.contains("ImmatureSignature"), "{}", e.reason);
        early.nbf = Some(now() - 1);
        let token = mint(&early, SECRET).unwrap();
        assert_eq!(verify(&token, SECRET, &open()).unwrap(), early);
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let scope = TokenScope {
            audience: Some("sfu".into()),
            issuer: Some("backend".into()),
        };
        let mut c = claims(now() + 60);
        let fails = |c: &Claims| verify(&mint(c, SECRET).unwrap(), SECRET, &scope).is_err();
        assert!(fails(&c), "missing aud and iss");
        c.aud = Some("sfu".into());
        assert!(fails(&c), "missing iss");
        c.iss = Some("elsewhere".into());
        assert!(fails(&c), "wrong iss");
        c.iss = Some("backend".into());
        assert_eq!(
            verify(&mint(&c, SECRET).unwrap(), SECRET, &scope).unwrap(),
            c
        );
        c.aud = Some("other".into());
        assert!(fails(&c), "wrong aud");
        // Without a configured scope, aud and iss are not looked at.
        assert!(verify(&mint(&c, SECRET).unwrap(), SECRET, &open()).is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(check_secret(SECRET).is_ok());
        let e = check_secret("s3cret").unwrap_err();
        assert!(e.contains("at least 32 bytes"), "{e}");
    }
}

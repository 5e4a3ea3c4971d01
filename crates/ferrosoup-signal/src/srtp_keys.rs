//! SRTP keys of plain transports as the HTTP API and the pipe handshake write them
//! (`{cryptoSuite, keyBase64}`), and as the room crate holds them.

use base64::Engine as _;

use ferrosoup_proto::broadcaster::{SrtpCryptoSuite, SrtpParameters};
use ferrosoup_room::plain::{SrtpMasterKey, SrtpProfile};

use crate::error::SignalError;

/// The crypto suite's profile.
pub fn profile(suite: SrtpCryptoSuite) -> SrtpProfile {
    match suite {
        SrtpCryptoSuite::AeadAes256Gcm => SrtpProfile::AeadAes256Gcm,
        SrtpCryptoSuite::AeadAes128Gcm => SrtpProfile::AeadAes128Gcm,
        SrtpCryptoSuite::AesCm128HmacSha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
    }
}

/// A key as `srtpParameters` (`None` for an unprotected profile).
pub fn to_parameters(key: &SrtpMasterKey) -> Option<SrtpParameters> {
    let crypto_suite = match key.profile {
        SrtpProfile::AeadAes256Gcm => SrtpCryptoSuite::AeadAes256Gcm,
        SrtpProfile::AeadAes128Gcm => SrtpCryptoSuite::AeadAes128Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => SrtpCryptoSuite::AesCm128HmacSha1_80,
        SrtpProfile::Unprotected => return None,
    };
    Some(SrtpParameters {
        crypto_suite,
        key_base64: base64::engine::general_purpose::STANDARD.encode(&key.key_and_salt),
    })
}

/// `srtpParameters` as a key: 400 when the key is not base64 or not as long as its suite
/// needs.
pub fn from_parameters(p: &SrtpParameters) -> Result<SrtpMasterKey, SignalError> {
    let profile = profile(p.crypto_suite);
    let key_and_salt = base64::engine::general_purpose::STANDARD
        .decode(&p.key_base64)
        .map_err(|_| SignalError::bad_request("srtpParameters.keyBase64: not base64"))?;
    let expected = SrtpMasterKey::expected_len(profile);
    if key_and_salt.len() != expected {
        return Err(SignalError::bad_request(format!(
            "srtpParameters.keyBase64: {} bytes, {expected} expected",
            key_and_salt.len()
        )));
    }
    Ok(SrtpMasterKey {
        profile,
        key_and_salt,
    })
}

//! H264 `profile-level-id` rules (RFC 6184 §8.1) as libwebrtc and mediasoup apply
//! them: profiles must be equal to match; the answer's level depends on
//! `level-asymmetry-allowed`.

use crate::rtp_parameters::{ParameterValue, Parameters};

/// H264 profiles distinguished by libwebrtc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// Level 1b; every other level is ten times the level number (3.1 → 31).
const LEVEL_1B: u8 = 0;
const LEVEL_1: u8 = 10;
const LEVEL_1_1: u8 = 11;
const LEVEL_3_1: u8 = 31;

/// Levels accepted as `level_idc` (1b is encoded as 11 plus constraint_set3).
const LEVELS: [u8; 18] = [
    10, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60, 61, 62,
];

/// Constraint set 3 flag: with `level_idc` 11 it means level 1b.
const CONSTRAINT_SET3_FLAG: u8 = 0x10;

/// `(profile_idc, profile_iop pattern, profile)`; in a pattern `x` is any bit.
const PROFILE_PATTERNS: [(u8, &[u8; 8], Profile); 9] = [
    (0x42, b"x1xx0000", Profile::ConstrainedBaseline),
    (0x4D, b"1xxx0000", Profile::ConstrainedBaseline),
    (0x58, b"11xx0000", Profile::ConstrainedBaseline),
    (0x42, b"x0xx0000", Profile::Baseline),
    (0x58, b"10xx0000", Profile::Baseline),
    (0x4D, b"0x0x0000", Profile::Main),
    (0x64, b"00000000", Profile::High),
    (0x64, b"00001100", Profile::ConstrainedHigh),
    (0xF4, b"00000000", Profile::PredictiveHigh444),
];

/// A parsed `profile-level-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProfileLevelId {
    profile: Profile,
    level: u8,
}

/// Used when a codec has no `profile-level-id` (libwebrtc's backwards-compatible
/// default rather than RFC 6184's Baseline 1).
const DEFAULT_PROFILE_LEVEL_ID: ProfileLevelId = ProfileLevelId {
    profile: Profile::ConstrainedBaseline,
    level: LEVEL_3_1,
};

fn pattern_matches(pattern: &[u8; 8], value: u8) -> bool {
    pattern.iter().enumerate().all(|(i, c)| {
        let bit = (value >> (7 - i)) & 1;
        match c {
            b'0' => bit == 0,
            b'1' => bit == 1,
            _ => true,
        }
    })
}

fn parse_profile_level_id(text: &str) -> Option<ProfileLevelId> {
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let numeric = u32::from_str_radix(text, 16).ok()?;
    if numeric == 0 {
        return None;
    }
    let [_, profile_idc, profile_iop, level_idc] = numeric.to_be_bytes();
    let level = match level_idc {
        LEVEL_1_1 if profile_iop & CONSTRAINT_SET3_FLAG != 0 => LEVEL_1B,
        LEVEL_1_1 => LEVEL_1_1,
        l if LEVELS.contains(&l) => l,
        _ => return None,
    };
    PROFILE_PATTERNS
        .iter()
        .find(|(idc, pattern, _)| *idc == profile_idc && pattern_matches(pattern, profile_iop))
        .map(|&(_, _, profile)| ProfileLevelId { profile, level })
}

fn profile_level_id_to_string(id: ProfileLevelId) -> Option<String> {
    if id.level == LEVEL_1B {
        return match id.profile {
            Profile::ConstrainedBaseline => Some("42f00b".to_owned()),
            Profile::Baseline => Some("42100b".to_owned()),
            Profile::Main => Some("4d100b".to_owned()),
            _ => None,
        };
    }
    let prefix = match id.profile {
        Profile::ConstrainedBaseline => "42e0",
        Profile::Baseline => "4200",
        Profile::Main => "4d00",
        Profile::ConstrainedHigh => "640c",
        Profile::High => "6400",
        Profile::PredictiveHigh444 => "f400",
    };
    Some(format!("{prefix}{:02x}", id.level))
}

/// The raw `profile-level-id` if it is present and not "falsy" (`""`, `0`).
fn raw_profile_level_id(params: &Parameters) -> Option<&ParameterValue> {
    params.get("profile-level-id").filter(|v| match v {
        ParameterValue::String(s) => !s.is_empty(),
        ParameterValue::Number(n) => *n != 0,
        ParameterValue::Float(f) => *f != 0.0,
    })
}

/// The codec's profile and level: the default when absent, `None` when invalid.
///
/// A numeric value is read as the digits it was written with (SDP parsers turn
/// `profile-level-id=640034` into the number 640034).
fn sdp_profile_level_id(params: &Parameters) -> Option<ProfileLevelId> {
    match raw_profile_level_id(params) {
        None => Some(DEFAULT_PROFILE_LEVEL_ID),
        Some(ParameterValue::String(s)) => parse_profile_level_id(s),
        Some(ParameterValue::Number(n)) => parse_profile_level_id(&n.to_string()),
        Some(ParameterValue::Float(_)) => None,
    }
}

/// Whether both codecs have valid `profile-level-id`s of the same profile
/// (levels are not compared).
pub(super) fn is_same_profile(a: &Parameters, b: &Parameters) -> bool {
    match (sdp_profile_level_id(a), sdp_profile_level_id(b)) {
        (Some(a), Some(b)) => a.profile == b.profile,
        _ => false,
    }
}

fn is_level_asymmetry_allowed(params: &Parameters) -> bool {
    params
        .get("level-asymmetry-allowed")
        .and_then(ParameterValue::as_i64)
        == Some(1)
}

fn is_less_level(a: u8, b: u8) -> bool {
    if a == LEVEL_1B {
        b != LEVEL_1 && b != LEVEL_1B
    } else if b == LEVEL_1B {
        a != LEVEL_1
    } else {
        a < b
    }
}

/// Why no answer `profile-level-id` can be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProfileMismatch;

/// The `profile-level-id` to use when answering `remote`'s offer with `local`'s
/// codec: `Ok(None)` when neither has one (both use the default), an error when
/// either is invalid or the profiles differ.
pub(super) fn profile_level_id_for_answer(
    local: &Parameters,
    remote: &Parameters,
) -> Result<Option<String>, ProfileMismatch> {
    if raw_profile_level_id(local).is_none() && raw_profile_level_id(remote).is_none() {
        return Ok(None);
    }
    let local_id = sdp_profile_level_id(local).ok_or(ProfileMismatch)?;
    let remote_id = sdp_profile_level_id(remote).ok_or(ProfileMismatch)?;
    if local_id.profile != remote_id.profile {
        return Err(ProfileMismatch);
    }
    let asymmetry = is_level_asymmetry_allowed(local) && is_level_asymmetry_allowed(remote);
    // Without asymmetry the answer may not upgrade the offered level.
    let level = if asymmetry || is_less_level(local_id.level, remote_id.level) {
        local_id.level
    } else {
        remote_id.level
    };
    Ok(profile_level_id_to_string(ProfileLevelId {
        profile: local_id.profile,
        level,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParameterValue)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_common_profiles() {
        let p = |s| parse_profile_level_id(s).map(|id| (id.profile, id.level));
        assert_eq!(p("42e01f"), Some((Profile::ConstrainedBaseline, 31)));
        assert_eq!(p("42001f"), Some((Profile::Baseline, 31)));
        assert_eq!(p("4d001f"), Some((Profile::Main, 31)));
        assert_eq!(p("640c1f"), Some((Profile::ConstrainedHigh, 31)));
        assert_eq!(p("64001f"), Some((Profile::High, 31)));
        assert_eq!(p("f4001f"), Some((Profile::PredictiveHigh444, 31)));
        assert_eq!(p("42f00b"), Some((Profile::ConstrainedBaseline, LEVEL_1B)));
        assert_eq!(p("000000"), None);
        assert_eq!(p("42e0ff"), None);
        assert_eq!(p("42e01"), None);
        assert_eq!(p("zze01f"), None);
        assert_eq!(p("ff001f"), None);
    }

    #[test]
    fn to_string_round_trips() {
        for s in [
            "42e01f", "42001f", "4d0032", "640c1f", "64001f", "42f00b", "4d100b",
        ] {
            let id = parse_profile_level_id(s).unwrap();
            assert_eq!(profile_level_id_to_string(id).as_deref(), Some(s));
        }
    }

    #[test]
    fn same_profile_ignores_level_and_uses_default() {
        let a = params(&[("profile-level-id", "42e01f".into())]);
        let b = params(&[("profile-level-id", "42e034".into())]);
        let high = params(&[("profile-level-id", "64001f".into())]);
        assert!(is_same_profile(&a, &b));
        assert!(is_same_profile(&a, &Parameters::new()));
        assert!(!is_same_profile(&a, &high));
        let numeric = params(&[("profile-level-id", ParameterValue::Number(640034))]);
        assert!(is_same_profile(&numeric, &high));
        let bad = params(&[("profile-level-id", "nothex".into())]);
        assert!(!is_same_profile(&bad, &bad));
    }

    #[test]
    fn answer_level_follows_asymmetry() {
        let local = params(&[("profile-level-id", "42e034".into())]);
        let remote = params(&[("profile-level-id", "42e01f".into())]);
        assert_eq!(
            profile_level_id_for_answer(&local, &remote),
            Ok(Some("42e01f".to_owned()))
        );
        let asym = |id: &str| {
            params(&[
                ("profile-level-id", id.into()),
                ("level-asymmetry-allowed", 1u8.into()),
            ])
        };
        assert_eq!(
            profile_level_id_for_answer(&asym("42e034"), &asym("42e01f")),
            Ok(Some("42e034".to_owned()))
        );
        assert_eq!(
            profile_level_id_for_answer(&Parameters::new(), &Parameters::new()),
            Ok(None)
        );
        assert_eq!(
            profile_level_id_for_answer(&asym("64001f"), &asym("42e01f")),
            Err(ProfileMismatch)
        );
    }

    fn min_level_for_test(a: u8, b: u8) -> u8 {
        if is_less_level(a, b) { a } else { b }
    }

    #[test]
    fn level_1b_ordering() {
        assert!(is_less_level(LEVEL_1B, 11));
        assert!(!is_less_level(LEVEL_1B, LEVEL_1));
        // As libwebrtc: only 1b compares specially against 1.
        assert!(!is_less_level(LEVEL_1, LEVEL_1B));
        assert_eq!(min_level_for_test(LEVEL_1, LEVEL_1B), LEVEL_1B);
        assert!(is_less_level(30, 31));
    }
}

//! `GET /api/ice-servers` (PROTOCOL.md, "HTTP"): the STUN and TURN servers clients pass to
//! their PeerConnections. TURN credentials are either static or time-limited ones of the
//! TURN REST scheme that coturn checks with `use-auth-secret`: the username is
//! `"<unix expiry>:<user>"` and the password is base64(HMAC-SHA1(secret, username)).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use ferrosoup_proto::ice_servers::{IceServer, IceServers};

/// How TURN clients authenticate.
#[derive(Clone)]
pub enum TurnAuth {
    /// The same username and password for everyone (`TURN_USERNAME`, `TURN_PASSWORD`).
    Static {
        /// TURN username.
        username: String,
        /// TURN password.
        password: String,
    },
    /// Time-limited credentials from a secret shared with the TURN server (`TURN_SECRET`),
    /// valid for `ttl_secs` (`TURN_TTL`).
    Rest {
        /// coturn's `static-auth-secret`.
        secret: String,
        /// Lifetime of a credential, seconds.
        ttl_secs: u64,
    },
}

impl std::fmt::Debug for TurnAuth {
    /// Names the scheme, never the password or the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static { username, .. } => write!(f, "static credentials of user {username:?}"),
            Self::Rest { ttl_secs, .. } => {
                write!(f, "time-limited credentials (TURN REST), {ttl_secs} s")
            }
        }
    }
}

/// The configured STUN and TURN servers.
#[derive(Clone, Debug, Default)]
pub struct IceServersConfig {
    /// `stun:` / `stuns:` URLs.
    pub stun_urls: Vec<String>,
    /// `turn:` / `turns:` URLs.
    pub turn_urls: Vec<String>,
    /// Credentials of the TURN URLs (always set when there are TURN URLs).
    pub turn_auth: Option<TurnAuth>,
}

impl IceServersConfig {
    /// Checks and combines the settings: every URL has the scheme of its list, TURN URLs
    /// come with exactly one kind of credentials and credentials with TURN URLs.
    pub fn new(
        stun_urls: &[String],
        turn_urls: &[String],
        static_credentials: Option<(&str, &str)>,
        secret: Option<&str>,
        ttl_secs: u64,
    ) -> Result<Self, String> {
        let clean = |urls: &[String]| -> Vec<String> {
            urls.iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        };
        let stun_urls = clean(stun_urls);
        let turn_urls = clean(turn_urls);
        for url in &stun_urls {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                return Err(format!(
                    "STUN_URLS: {url:?} is no stun: or stuns: URL (e.g. stun:stun.example.com:3478)"
                ));
            }
        }
        for url in &turn_urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err(format!(
                    "TURN_URLS: {url:?} is no turn: or turns: URL (e.g. turn:turn.example.com:3478?transport=udp)"
                ));
            }
        }
        let turn_auth = match (static_credentials, secret) {
            (Some(_), Some(_)) => {
                return Err(
                    "set either TURN_SECRET (time-limited credentials) or TURN_USERNAME and TURN_PASSWORD (static ones), not both".into(),
                );
            }
            (Some((username, password)), None) => Some(TurnAuth::Static {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
            (None, Some(secret)) => {
                if ttl_secs == 0 {
                    return Err("TURN_TTL must be at least 1 second".into());
                }
                Some(TurnAuth::Rest {
                    secret: secret.to_owned(),
                    ttl_secs,
                })
            }
            (None, None) => None,
        };
        match (turn_urls.is_empty(), turn_auth.is_some()) {
            (false, false) => Err(
                "TURN_URLS needs credentials: TURN_SECRET (as coturn's static-auth-secret) or TURN_USERNAME and TURN_PASSWORD".into(),
            ),
            (true, true) => Err("TURN credentials are set but TURN_URLS is empty".into()),
            _ => Ok(Self {
                stun_urls,
                turn_urls,
                turn_auth,
            }),
        }
    }

    /// The servers for `user` (a peer id, or a random one) at `now_unix` (seconds since the
    /// Unix epoch): one STUN entry, one TURN entry with credentials, each when configured.
    pub fn ice_servers(&self, now_unix: u64, user: &str) -> IceServers {
        let mut ice_servers = Vec::new();
        if !self.stun_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        let credentials = self.turn_auth.as_ref().and_then(|auth| match auth {
            TurnAuth::Static { username, password } => Some((username.clone(), password.clone())),
            TurnAuth::Rest { secret, ttl_secs } => {
                let username = format!("{}:{user}", now_unix.saturating_add(*ttl_secs));
                let credential = turn_rest_password(secret, &username)?;
                Some((username, credential))
            }
        });
        if let Some((username, credential)) = credentials {
            ice_servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        IceServers { ice_servers }
    }
}

/// The TURN REST password of `username`: base64(HMAC-SHA1(secret, username)), what coturn
/// computes with `use-auth-secret` / `static-auth-secret` (`None` only if the HMAC refused
/// the key, which it does for no length).
pub fn turn_rest_password(secret: &str, username: &str) -> Option<String> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(username.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rest_password_matches_openssl() {
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac north -binary | base64`
        assert_eq!(
            turn_rest_password("north", "1700000000:alice").unwrap(),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn rest_credentials_expire_after_the_ttl() {
        let config = IceServersConfig::new(
            &urls(&["stun:stun.example.com:3478"]),
            &urls(&[
                "turn:turn.example.com:3478?transport=udp",
                " turns:turn.example.com:5349",
            ]),
            None,
            Some("north"),
            600,
        )
        .unwrap();
        let servers = config.ice_servers(1_699_999_400, "alice").ice_servers;
        assert_eq!(
            servers,
            vec![
                IceServer {
                    urls: urls(&["stun:stun.example.com:3478"]),
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: urls(&[
                        "turn:turn.example.com:3478?transport=udp",
                        "turns:turn.example.com:5349"
                    ]),
                    username: Some("1700000000:alice".into()),
                    credential: Some("Cd/49soE35ICqcJF/bCTn8Z4OyE=".into()),
                },
            ]
        );
    }

    #[test]
    fn static_credentials_are_passed_as_given() {
        let config = IceServersConfig::new(
            &[],
            &urls(&["turn:10.0.0.1:3478"]),
            Some(("user", "pass")),
            None,
            86_400,
        )
        .unwrap();
        let servers = config.ice_servers(5, "whoever").ice_servers;
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].username.as_deref(), Some("user"));
        assert_eq!(servers[0].credential.as_deref(), Some("pass"));
    }

    #[test]
    fn nothing_configured_is_an_empty_list() {
        let config = IceServersConfig::new(&[], &urls(&[" "]), None, None, 86_400).unwrap();
        assert!(config.ice_servers(0, "a").ice_servers.is_empty());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let turn = urls(&["turn:t.example.com"]);
        for (stun, turn, fixed, secret, ttl, says) in [
            (urls(&["turn:x"]), vec![], None, None, 1, "STUN_URLS"),
            (vec![], urls(&["stun:x"]), None, Some("s"), 1, "TURN_URLS"),
            (vec![], turn.clone(), None, None, 1, "needs credentials"),
            (
                vec![],
                turn.clone(),
                Some(("u", "p")),
                Some("s"),
                1,
                "not both",
            ),
            (vec![], turn.clone(), None, Some("s"), 0, "TURN_TTL"),
            (vec![], vec![], None, Some("s"), 1, "TURN_URLS is empty"),
        ] {
            let err = IceServersConfig::new(&stun, &turn, fixed, secret, ttl).unwrap_err();
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let rest = TurnAuth::Rest {
            secret: "top-secret".into(),
            ttl_secs: 60,
        };
        let fixed = TurnAuth::Static {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{rest:?}").contains("top-secret"));
        assert!(!format!("{fixed:?}").contains("hunter2"));
    }
}

//! Registry credentials and the token flows of the distribution auth spec.
//!
//! Credentials are held in [`Credentials`], whose `Debug` prints no secret, and are only
//! ever written into request headers or token-request bodies, never into errors or logs.

use base64::Engine;

/// What the client sent (CRI `AuthConfig`), in the form the registry protocol uses.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Username and password: HTTP Basic, or Basic against the token endpoint.
    Basic { username: String, password: String },
    /// A refresh token (`identity_token`): exchanged for an access token with the
    /// OAuth2 refresh-token grant.
    IdentityToken { username: String, token: String },
    /// A bearer token (`registry_token`) sent to the registry as is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, <redacted>)")
            }
            Credentials::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
        }
    }
}

/// The CRI `AuthConfig` fields, as plain strings.
#[derive(Clone, Default)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl Credentials {
    /// Chooses credentials from a CRI `AuthConfig`, in the order containerd applies:
    /// registry token, identity token, username/password, then the `auth` blob.
    /// `Ok(None)` when nothing was given (anonymous).
    pub fn from_auth_config(a: &AuthConfig) -> Result<Option<Credentials>, &'static str> {
        if !a.registry_token.is_empty() {
            return Ok(Some(Credentials::RegistryToken(a.registry_token.clone())));
        }
        if !a.identity_token.is_empty() {
            return Ok(Some(Credentials::IdentityToken {
                username: a.username.clone(),
                token: a.identity_token.clone(),
            }));
        }
        if !a.username.is_empty() || !a.password.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: a.username.clone(),
                password: a.password.clone(),
            }));
        }
        if !a.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|_| "auth is not valid base64")?;
            let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8")?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("auth must encode username:password")?;
            return Ok(Some(Credentials::Basic {
                username: username.into(),
                password: password.into(),
            }));
        }
        Ok(None)
    }

    /// `Authorization` value for HTTP Basic.
    pub(crate) fn basic_header(username: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        }
        _ => None,
    }
}

/// `key="value", key=value` pairs; quoted values may contain commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let cases = [
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/busybox:pull".into()),
                }),
            ),
            (
                r#"Bearer realm="https://r/t", scope="repository:a:pull,push""#,
                Some(Challenge::Bearer {
                    realm: "https://r/t".into(),
                    service: None,
                    scope: Some("repository:a:pull,push".into()),
                }),
            ),
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            ("Bearer service=x", None),
            ("Negotiate abc", None),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenge(header), want, "{header}");
        }
    }

    #[test]
    fn credentials_from_auth_config() {
        let blob = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let cases: Vec<(AuthConfig, Result<Option<Credentials>, &str>)> = vec![
            (AuthConfig::default(), Ok(None)),
            (
                AuthConfig {
                    username: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                },
                Ok(Some(Credentials::Basic {
                    username: "u".into(),
                    password: "p".into(),
                })),
            ),
            (
                AuthConfig {
                    auth: blob,
                    ..Default::default()
                },
                Ok(Some(Credentials::Basic {
                    username: "u".into(),
                    password: "p:w".into(),
                })),
            ),
            (
                AuthConfig {
                    username: "u".into(),
                    identity_token: "it".into(),
                    ..Default::default()
                },
                Ok(Some(Credentials::IdentityToken {
                    username: "u".into(),
                    token: "it".into(),
                })),
            ),
            (
                AuthConfig {
                    registry_token: "rt".into(),
                    password: "p".into(),
                    ..Default::default()
                },
                Ok(Some(Credentials::RegistryToken("rt".into()))),
            ),
            (
                AuthConfig {
                    auth: "!!!".into(),
                    ..Default::default()
                },
                Err("auth is not valid base64"),
            ),
            (
                AuthConfig {
                    auth: base64::engine::general_purpose::STANDARD.encode("nocolon"),
                    ..Default::default()
                },
                Err("auth must encode username:password"),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(Credentials::from_auth_config(&config), want);
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("s3cret"),
            "{shown}"
        );
        let shown = format!("{:?}", Credentials::RegistryToken("tok3n".into()));
        assert!(!shown.contains("tok3n"), "{shown}");
    }
}

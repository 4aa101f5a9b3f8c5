//! Registry authentication: `WWW-Authenticate` challenges, Bearer token fetches and the token
//! cache.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// Credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password (logs, error messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A parsed authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value; the first Bearer or Basic challenge wins.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(|c: char| c.is_whitespace()) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let (params, next) = parse_params(after);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => return Some(Challenge::Basic),
            "bearer" => {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                return get("realm").map(|realm| Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                });
            }
            _ => rest = next,
        }
    }
    None
}

/// Parses `k=v, k="quoted \" v", ...` up to the next challenge (a token not followed by `=`).
/// Returns the pairs and the unparsed remainder.
fn parse_params(mut s: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(eq) = s.find('=') else {
            return (out, s);
        };
        let key = &s[..eq];
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ',') {
            return (out, s); // the next challenge's scheme
        }
        let after = &s[eq + 1..];
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key.to_string(), value));
        s = rest;
    }
}

/// The token endpoint's answer (Docker token spec: `token`, or OAuth2's `access_token`).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A cached bearer token.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl Token {
    pub fn new(resp: TokenResponse) -> Option<Token> {
        let value = resp
            .token
            .filter(|t| !t.is_empty())
            .or(resp.access_token.filter(|t| !t.is_empty()))?;
        // The spec's default lifetime is 60 s; keep a margin so a token does not expire in
        // flight.
        let secs = resp.expires_in.unwrap_or(60).max(10);
        Some(Token {
            value,
            expires: Instant::now() + Duration::from_secs(secs - 5),
        })
    }

    pub fn valid(&self) -> bool {
        Instant::now() < self.expires
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn basic_and_multiple() {
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        let c = parse_challenge(r#"Foo a=b, Bearer realm="x\"y", error="insufficient_scope""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "x\"y".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn token_fields() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(Token::new(t).unwrap().value, "a");
        let t: TokenResponse = serde_json::from_str(r#"{"token":"t","access_token":"a"}"#).unwrap();
        assert_eq!(Token::new(t).unwrap().value, "t");
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(Token::new(t).is_none());
    }
}

//! Signed tokens (JWT): the key the server verifies with, the claims it reads, and the tokens
//! `tickerfeed token` signs for tests and demos.
//!
//! One algorithm per server, fixed by its key: HS256 for a shared secret (`--auth-secret-file`),
//! RS256 or ES256 (P-256) for a PEM public key (`--auth-public-key`). A token whose header names
//! another algorithm is refused, so a public key can never be used as an HMAC secret.
//! Required claims: `sub`, `exp`; `nbf` is honoured when present; no leeway (the server's clock
//! decides expiry, and a session ends at `exp` to the second). Invariant: a [`Claims`] value
//! exists only for a token whose signature, times and `symbols` patterns were all checked.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::entitlements::Entitlements;

/// A secret shorter than this is refused: HS256 is only as strong as its key (RFC 7518 §3.2
/// asks for at least the hash size, 32 bytes).
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// Why the server cannot verify tokens with the key it was given: the file is named.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("{setting} {path}: {source}")]
    Read {
        /// The setting that named it.
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{setting} {path}: {message}")]
    Invalid {
        /// The setting that named it.
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// Defaulted so that a token without it is refused by the required-claims check, which
    /// names it, rather than by the JSON reader.
    #[serde(default)]
    pub sub: String,
    /// Seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

impl Claims {
    /// When the token stops being valid.
    pub(crate) fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a token was refused; each is a 401 (the message says which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("a token is required: send it as 'Authorization: Bearer <token>' or in the query parameter 'token'")]
    Missing,
    #[error("the token is not a JWT (three base64url parts separated by '.')")]
    Malformed,
    #[error("the token's signature does not verify with the server's key")]
    BadSignature,
    #[error("the token is signed with {0}; this server verifies {1}")]
    WrongAlgorithm(String, &'static str),
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's claims are unusable: {0}")]
    Claims(String),
}

impl TokenError {
    /// The `error` code of the 401: `token_expired` lets a client know that a new token of the
    /// same kind will do; everything else is `unauthorized`.
    pub(crate) fn is_expiry(&self) -> bool {
        matches!(self, TokenError::Expired)
    }
}

/// The key tokens are verified with, and how.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.algorithm)
    }
}

impl Verifier {
    /// HS256 with the secret in `path` (its bytes, less a trailing newline).
    pub(crate) fn from_secret_file(path: &Path) -> Result<Verifier, KeyError> {
        let secret = read_secret(path, "--auth-secret-file")?;
        let key = DecodingKey::from_secret(&secret).map_err(|e| invalid("--auth-secret-file", path, e.to_string()))?;
        Ok(Verifier::new(key, Algorithm::HS256))
    }

    /// RS256 or ES256, by the kind of the PEM public key in `path`.
    pub(crate) fn from_public_key_file(path: &Path) -> Result<Verifier, KeyError> {
        const SETTING: &str = "--auth-public-key";
        let pem = std::fs::read(path).map_err(|source| KeyError::Read { setting: SETTING, path: path.display().to_string(), source })?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            return Ok(Verifier::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            return Ok(Verifier::new(key, Algorithm::ES256));
        }
        Err(invalid(SETTING, path, "not a PEM RSA or EC (P-256) public key (-----BEGIN PUBLIC KEY-----)".into()))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Verifier {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        // No audience is configured: a token's `aud`, if any, is the issuer's business.
        validation.validate_aud = false;
        Verifier { key, validation, algorithm }
    }

    /// The algorithm tokens must be signed with (`HS256`, `RS256`, `ES256`).
    pub(crate) fn algorithm(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// The claims of a valid token, with its entitlements.
    pub(crate) fn verify(&self, token: &str) -> Result<(Claims, Entitlements), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation).map_err(|e| self.refusal(token, e.kind()))?;
        let claims = data.claims;
        let entitlements = Entitlements::parse(&claims.symbols).map_err(TokenError::Claims)?;
        if claims.sub.is_empty() {
            return Err(TokenError::Claims("claim 'sub' is empty".into()));
        }
        Ok((claims, entitlements))
    }

    fn refusal(&self, token: &str, kind: &ErrorKind) -> TokenError {
        match kind {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => {
                let named = jsonwebtoken::decode_header(token.trim()).map(|h| algorithm_name(h.alg).to_string()).unwrap_or_else(|_| "another algorithm".into());
                TokenError::WrongAlgorithm(named, self.algorithm())
            }
            ErrorKind::MissingRequiredClaim(claim) => TokenError::Claims(format!("claim '{claim}' is missing")),
            ErrorKind::InvalidClaimFormat(claim) => TokenError::Claims(format!("claim '{claim}' has the wrong type")),
            ErrorKind::Json(e) => TokenError::Claims(e.to_string()),
            _ => TokenError::Malformed,
        }
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "another algorithm",
    }
}

fn invalid(setting: &'static str, path: &Path, message: String) -> KeyError {
    KeyError::Invalid { setting, path: path.display().to_string(), message }
}

/// A secret file's bytes, less one trailing newline (`echo … > file` adds one), at least
/// [`MIN_SECRET_BYTES`] long.
fn read_secret(path: &Path, setting: &'static str) -> Result<Vec<u8>, KeyError> {
    let mut secret = std::fs::read(path).map_err(|source| KeyError::Read { setting, path: path.display().to_string(), source })?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(invalid(
            setting,
            path,
            format!("the secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} (e.g. head -c 48 /dev/urandom | base64 > FILE)", secret.len()),
        ));
    }
    Ok(secret)
}

/// What `tickerfeed token` signs.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The subject (`sub`).
    pub sub: String,
    /// Symbol patterns (`symbols`): `AAPL`, `EUR*`, `*`.
    pub symbols: Vec<String>,
    /// Seconds from now to `exp`.
    pub ttl_seconds: u64,
    /// The `admin` claim (feed control).
    pub admin: bool,
}

/// A token signed with the HS256 secret in `secret_file`, for tests and demos: the claims are
/// checked as the server checks them, so a token it prints is one the server accepts.
pub fn sign_with_secret_file(secret_file: &Path, request: &TokenRequest) -> Result<String, String> {
    let secret = read_secret(secret_file, "--secret-file").map_err(|e| e.to_string())?;
    Entitlements::parse(&request.symbols)?;
    if request.sub.is_empty() {
        return Err("--sub: the subject must not be empty".into());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims { sub: request.sub.clone(), exp: now.saturating_add(request.ttl_seconds), symbols: request.symbols.clone(), admin: request.admin };
    let key = EncodingKey::from_secret(&secret).map_err(|e| format!("--secret-file {}: {e}", secret_file.display()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef-test\n").unwrap();
        path
    }

    fn request(ttl_seconds: u64) -> TokenRequest {
        TokenRequest { sub: "alice".into(), symbols: vec!["AAPL".into(), "EUR*".into()], ttl_seconds, admin: false }
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir);
        let token = sign_with_secret_file(&path, &request(60)).unwrap();
        let verifier = Verifier::from_secret_file(&path).unwrap();
        let (claims, entitlements) = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(!claims.admin);
        assert!(entitlements.allows("EURUSD") && !entitlements.allows("MSFT"));
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir);
        let verifier = Verifier::from_secret_file(&path).unwrap();
        let token = sign_with_secret_file(&path, &request(60)).unwrap();
        // The signature's first character (a whole 6 bits of it; the last one is partly padding).
        let at = token.rfind('.').unwrap() + 1;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert_eq!(verifier.verify(&tampered).unwrap_err(), TokenError::BadSignature);
        assert_eq!(verifier.verify("not a token").unwrap_err(), TokenError::Malformed);
        // exp in the past: an hour ago.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let secret = read_secret(&path, "x").unwrap();
        let old = Claims { sub: "a".into(), exp: now - 3600, symbols: vec![], admin: false };
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert_eq!(verifier.verify(&expired).unwrap_err(), TokenError::Expired);
        // Another secret.
        let other = dir.path().join("other");
        std::fs::write(&other, "another-secret-of-at-least-32-bytes!!").unwrap();
        let foreign = sign_with_secret_file(&other, &request(60)).unwrap();
        assert_eq!(verifier.verify(&foreign).unwrap_err(), TokenError::BadSignature);
        // Another algorithm (HS512) with the same secret.
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &old, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert_eq!(verifier.verify(&hs512).unwrap_err(), TokenError::WrongAlgorithm("HS512".into(), "HS256"));
        // No sub.
        #[derive(Serialize)]
        struct NoSub {
            exp: u64,
        }
        let no_sub = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &NoSub { exp: now + 60 }, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
        assert_eq!(verifier.verify(&no_sub).unwrap_err(), TokenError::Claims("claim 'sub' is missing".into()));
    }

    #[test]
    fn public_keys_verify_rs256_and_es256_and_refuse_the_other_algorithm() {
        let fixture = |name: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims { sub: "bob".into(), exp: now + 60, symbols: vec!["*".into()], admin: true };
        let rs = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap()).unwrap();
        let es = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap()).unwrap();
        let rsa = Verifier::from_public_key_file(&fixture("rs256-public.pem")).unwrap();
        let ec = Verifier::from_public_key_file(&fixture("es256-public.pem")).unwrap();
        assert_eq!((rsa.algorithm(), ec.algorithm()), ("RS256", "ES256"));
        let (verified, entitlements) = rsa.verify(&rs).unwrap();
        assert!(verified.admin && entitlements.allows_all());
        assert_eq!(ec.verify(&es).unwrap().0.sub, "bob");
        assert_eq!(rsa.verify(&es).unwrap_err(), TokenError::WrongAlgorithm("ES256".into(), "RS256"));
        assert_eq!(ec.verify(&rs).unwrap_err(), TokenError::WrongAlgorithm("RS256".into(), "ES256"));
        // The public key's bytes as an HMAC secret (the classic algorithm confusion) are refused.
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&std::fs::read(fixture("rs256-public.pem")).unwrap()).unwrap()).unwrap();
        assert_eq!(rsa.verify(&forged).unwrap_err(), TokenError::WrongAlgorithm("HS256".into(), "RS256"));
    }

    #[test]
    fn short_secrets_and_bad_key_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "secret\n").unwrap();
        let error = Verifier::from_secret_file(&short).unwrap_err().to_string();
        assert!(error.contains("--auth-secret-file") && error.contains("short") && error.contains("at least 32"), "{error}");
        let error = Verifier::from_public_key_file(&short).unwrap_err().to_string();
        assert!(error.contains("--auth-public-key") && error.contains("not a PEM"), "{error}");
        let error = Verifier::from_secret_file(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(error.contains("missing"), "{error}");
    }
}

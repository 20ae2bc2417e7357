//! Access control's settings: the key tokens are verified with, and the pages that may open a
//! session. Declared here once each (see [`crate::settings`]); [`super::Access`] is built from
//! them at start (a key file that cannot be used stops the start, naming the file).

use crate::settings::{Invalid, settings};

settings! {
    /// Who may connect, and from which web pages.
    pub struct AccessSettings, args AccessArgs {
        /// File holding the HS256 secret tokens are signed with (at least 32 bytes); turns
        /// authentication on. Empty: off.
        auth_secret_file: String = String::new(), env "TICKERFEED_AUTH_SECRET_FILE", shown "off";
        /// PEM public key (RSA for RS256, P-256 EC for ES256) tokens are verified with; turns
        /// authentication on. Empty: off.
        auth_public_key: String = String::new(), env "TICKERFEED_AUTH_PUBLIC_KEY", shown "off";
        /// Web page origins that may open /ws, /sse and /socket.io/ sessions: `self` (the
        /// server's own origin), `*`, or `scheme://host[:port|:*]`, comma-separated. Requests
        /// without an Origin header (non-browser clients) are not judged by it.
        allowed_origins: String = super::origin::DEFAULT.to_string(), env "TICKERFEED_ALLOWED_ORIGINS", shown "self and localhost, 127.0.0.1, [::1] on any port";
    }
    check = check_access;
}

fn check_access(settings: &AccessSettings) -> Result<(), Invalid> {
    if !settings.auth_secret_file.is_empty() && !settings.auth_public_key.is_empty() {
        return Err(Invalid::new("auth_public_key", "give either auth_secret_file (HS256) or auth_public_key (RS256/ES256), not both"));
    }
    super::origin::OriginPolicy::parse(&settings.allowed_origins).map_err(|message| Invalid::new("allowed_origins", message))?;
    Ok(())
}

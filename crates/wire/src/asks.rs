//! What an on-demand proxy (`Node.on_demand`) asked the control plane for:
//! the hosts it needs config of, kept for the life of the process so that
//! a new stream (trellisd restarted, the stream moved) is served the same
//! config at once, and the hosts not yet sent on the current stream.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Asks {
    state: Mutex<State>,
    unsent: Notify,
}

#[derive(Debug, Default)]
struct State {
    asked: BTreeSet<String>,
    unsent: Vec<String>,
}

impl Asks {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `host` unless it was asked for already; whether it was new.
    /// However many requests wait for a host, it is asked for once.
    pub fn ask(&self, host: &str) -> bool {
        let mut state = self.state();
        if !state.asked.insert(host.to_string()) {
            return false;
        }
        state.unsent.push(host.to_string());
        drop(state);
        self.unsent.notify_one();
        true
    }

    /// Every host asked for (and not refused), in name order.
    pub fn asked(&self) -> Vec<String> {
        self.state().asked.iter().cloned().collect()
    }

    /// Forgets `host`, refused by the control plane: a later request may ask again.
    pub fn forget(&self, host: &str) {
        let mut state = self.state();
        state.asked.remove(host);
        state.unsent.retain(|h| h != host);
    }

    /// For a new stream: every host asked for, which its node carries; none
    /// is left to send on it.
    pub(crate) fn for_new_stream(&self) -> Vec<String> {
        let mut state = self.state();
        state.unsent.clear();
        state.asked.iter().cloned().collect()
    }

    /// The hosts asked for since the last call, once there are any.
    pub(crate) async fn unsent(&self) -> Vec<String> {
        loop {
            let unsent = std::mem::take(&mut self.state().unsent);
            if !unsent.is_empty() {
                return unsent;
            }
            self.unsent.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_is_asked_for_once_and_again_after_a_refusal() {
        let asks = Asks::default();
        assert!(asks.ask("b.example.com"));
        assert!(!asks.ask("b.example.com"));
        assert!(asks.ask("a.example.com"));
        assert_eq!(asks.unsent().await, vec!["b.example.com", "a.example.com"]);
        assert_eq!(asks.asked(), vec!["a.example.com", "b.example.com"]);
        asks.forget("a.example.com");
        assert!(asks.ask("a.example.com"));
        assert!(asks.ask("c.example.com"));
        // A new stream's node carries them all; nothing is left to send.
        assert_eq!(asks.for_new_stream().len(), 3);
        assert!(asks.state().unsent.is_empty());
    }
}

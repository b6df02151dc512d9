//! What an on-demand proxy (`Node.on_demand`) asked the control plane for:
//! the hosts it needs config of, kept until they are forgotten after disuse
//! (or for the life of the process) so that a new stream (trellisd
//! restarted, the stream moved) is served the same config at once, and the
//! asks and forgets not yet sent on the current stream.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::server::on_demand::MAX_ASKED_AT_ONCE;

#[derive(Debug, Default)]
pub struct Asks {
    state: Mutex<State>,
    unsent: Notify,
}

#[derive(Debug, Default)]
struct State {
    asked: BTreeSet<String>,
    unsent: Vec<String>,
    /// Hosts forgotten after disuse, to tell the control plane.
    unsent_forgets: Vec<String>,
}

/// What is to be sent on the stream next: hosts to forget, then hosts to
/// ask for (one message: `forget_hosts` are handled first), each at most
/// [`MAX_ASKED_AT_ONCE`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unsent {
    pub forget: Vec<String>,
    pub ask: Vec<String>,
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
        // Asked again before its forget was sent: the control plane still
        // has it, and the ask that follows says it is wanted.
        state.unsent_forgets.retain(|h| h != host);
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

    /// Forgets `hosts`, unused for a while, and tells the control plane so:
    /// their config goes, and a later request asks again. Hosts not asked
    /// for are left out.
    pub fn forget_idle(&self, hosts: &[String]) {
        let mut state = self.state();
        let mut any = false;
        for host in hosts {
            if state.asked.remove(host) {
                state.unsent.retain(|h| h != host);
                state.unsent_forgets.push(host.clone());
                any = true;
            }
        }
        drop(state);
        if any {
            self.unsent.notify_one();
        }
    }

    /// For a new stream: every host asked for, which its node carries; none
    /// is left to send on it (the hosts forgotten are not in it).
    pub(crate) fn for_new_stream(&self) -> Vec<String> {
        let mut state = self.state();
        state.unsent.clear();
        state.unsent_forgets.clear();
        state.asked.iter().cloned().collect()
    }

    /// The forgets and asks since the last call, once there are any.
    pub(crate) async fn unsent(&self) -> Unsent {
        loop {
            let (unsent, more) = {
                let mut state = self.state();
                let take =
                    |v: &mut Vec<String>| v.drain(..v.len().min(MAX_ASKED_AT_ONCE)).collect();
                let unsent = Unsent {
                    forget: take(&mut state.unsent_forgets),
                    ask: take(&mut state.unsent),
                };
                let more = !state.unsent_forgets.is_empty() || !state.unsent.is_empty();
                (unsent, more)
            };
            if more {
                // The rest goes in the next message.
                self.unsent.notify_one();
            }
            if unsent != Unsent::default() {
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
        assert_eq!(
            asks.unsent().await.ask,
            vec!["b.example.com", "a.example.com"]
        );
        assert_eq!(asks.asked(), vec!["a.example.com", "b.example.com"]);
        asks.forget("a.example.com");
        assert!(asks.ask("a.example.com"));
        assert!(asks.ask("c.example.com"));
        // A new stream's node carries them all; nothing is left to send.
        assert_eq!(asks.for_new_stream().len(), 3);
        assert!(asks.state().unsent.is_empty());
    }

    #[tokio::test]
    async fn a_host_forgotten_after_disuse_is_told_once_and_asked_again_after() {
        let asks = Asks::default();
        let (a, b) = ("a.example.com".to_string(), "b.example.com".to_string());
        asks.ask(&a);
        asks.ask(&b);
        asks.unsent().await;
        asks.forget_idle(&[a.clone(), "never.example.com".into()]);
        assert_eq!(asks.asked(), vec![b.clone()]);
        let sent = asks.unsent().await;
        assert_eq!(sent.forget, vec![a.clone()], "only what was asked for");
        assert!(sent.ask.is_empty());
        // Called again: asked again, as a first call is.
        assert!(asks.ask(&a));
        assert_eq!(asks.unsent().await.ask, vec![a.clone()]);
        // Asked again before its forget went out: the forget is not sent.
        asks.forget_idle(std::slice::from_ref(&b));
        assert!(asks.ask(&b));
        assert_eq!(
            asks.unsent().await,
            Unsent {
                forget: vec![],
                ask: vec![b.clone()]
            }
        );
        // A new stream's node no longer carries a forgotten host, and no
        // forget is left to send on it.
        asks.forget_idle(std::slice::from_ref(&a));
        assert_eq!(asks.for_new_stream(), vec![b]);
        assert!(asks.state().unsent_forgets.is_empty());
    }

    #[tokio::test]
    async fn many_forgets_go_in_messages_of_at_most_the_most_one_may_name() {
        let asks = Asks::default();
        let hosts: Vec<String> = (0..MAX_ASKED_AT_ONCE + 3)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        for h in &hosts {
            asks.ask(h);
        }
        asks.forget_idle(&hosts);
        let first = asks.unsent().await;
        assert_eq!(first.forget.len(), MAX_ASKED_AT_ONCE);
        assert!(first.ask.is_empty(), "asked and forgotten: nothing to ask");
        assert_eq!(asks.unsent().await.forget.len(), 3);
    }
}

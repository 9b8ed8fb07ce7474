//! Single-use, expiring tokens for parked streaming requests (kubelet's request cache).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::Pending;

/// Why a token was not redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or already used streaming token")]
    Unknown,
    #[error("streaming token expired")]
    Expired,
}

/// Parked requests by token.
pub struct Tokens {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Parks `pending` under a fresh random token (128 bits, URL-safe) and returns it.
    pub fn insert(&self, pending: Pending) -> String {
        let token = crust_runtime::ids::new_id()[..32].to_string();
        let now = Instant::now();
        let mut map = self.map.lock().expect("tokens poisoned");
        // Expired entries are dropped as new ones come in, so the map stays small
        // without a sweeper task.
        map.retain(|_, (at, _)| now.duration_since(*at) < self.ttl * 2);
        map.insert(token.clone(), (now, pending));
        token
    }

    /// Takes the request parked under `token`: each token works once, and only within
    /// the timeout.
    pub fn redeem(&self, token: &str) -> Result<Pending, TokenError> {
        let (at, pending) = self
            .map
            .lock()
            .expect("tokens poisoned")
            .remove(token)
            .ok_or(TokenError::Unknown)?;
        if at.elapsed() >= self.ttl {
            return Err(TokenError::Expired);
        }
        Ok(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward {
            pod_id: "p".into(),
            ports: vec![80],
        }
    }

    #[test]
    fn tokens_work_once() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.insert(pf());
        let b = t.insert(pf());
        assert_ne!(a, b, "tokens are random");
        assert_eq!(a.len(), 32);
        assert_eq!(t.redeem(&a), Ok(pf()));
        assert_eq!(t.redeem(&a), Err(TokenError::Unknown), "second use");
        assert_eq!(t.redeem("nope"), Err(TokenError::Unknown));
        assert_eq!(t.redeem(&b), Ok(pf()));
    }

    #[test]
    fn tokens_expire() {
        let t = Tokens::new(Duration::from_millis(1));
        let a = t.insert(pf());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.redeem(&a), Err(TokenError::Expired));
    }
}

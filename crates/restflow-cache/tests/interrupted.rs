//! A store call the caller interrupted (Ctrl-C in Python) is not a store
//! failure: the caller gets it back, the function is not run in its place,
//! and the circuit breaker does not count it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use restflow_cache::shared::{
    Breaker, Fetched, Generations, Holder, KeySet, Produced, SharedCache, SharedError,
    SharedOptions, SharedStore, Signer, StoreError, Written,
};
use restflow_cache::{Clock, Lifetime, Span, Timestamp};

/// Every call is interrupted.
#[derive(Default)]
struct Interrupted {
    calls: AtomicUsize,
}

impl Interrupted {
    fn call<T>(&self) -> Result<T, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Interrupted)
    }
}

impl SharedStore for Interrupted {
    fn fetch(&self, _keys: &KeySet) -> Result<Fetched, StoreError> {
        self.call()
    }
    fn put(&self, _key: &str, _payload: &[u8], _ttl: Option<Duration>) -> Result<(), StoreError> {
        self.call()
    }
    fn delete(&self, _key: &str) -> Result<bool, StoreError> {
        self.call()
    }
    fn delete_entry(&self, _keys: &KeySet) -> Result<bool, StoreError> {
        self.call()
    }
    fn generations(&self, _keys: &KeySet, _floor: Duration) -> Result<Generations, StoreError> {
        self.call()
    }
    fn put_current(
        &self,
        _keys: &KeySet,
        _generations: Generations,
        _payload: &[u8],
        _ttl: Option<Duration>,
        _holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError> {
        self.call()
    }
    fn fence(
        &self,
        _keys: &KeySet,
        _candidate: &str,
        _ttl: Duration,
    ) -> Result<String, StoreError> {
        self.call()
    }
    fn try_lock(&self, _key: &str, _token: &str, _ttl: Duration) -> Result<bool, StoreError> {
        self.call()
    }
    fn unlock(&self, _key: &str, _token: &str) -> Result<(), StoreError> {
        self.call()
    }
}

#[test]
fn an_interrupted_call_is_returned_never_bypassed_or_counted() {
    let cache = SharedCache::new(
        Interrupted::default(),
        Signer::new(b"key"),
        std::sync::Arc::new(Clock::frozen(Timestamp::from_micros(1_800_000_000_000_000))),
        Breaker::new(3, Duration::from_secs(60)),
        SharedOptions {
            lock_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_millis(200),
            // Even where a failing store is bypassed.
            bypass_on_failure: true,
        },
    );
    let keys = KeySet {
        data: "ns::f::::x=i1".into(),
        scope: "gen:f".into(),
        partition: None,
        version: "vgen:c".into(),
        lock: "lock:f1".into(),
        refresh: "refresh:f1".into(),
    };
    let computed = AtomicUsize::new(0);
    for _ in 0..5 {
        let answer = cache.get(
            &keys,
            Span::ZERO,
            || -> Result<Produced<String>, String> {
                computed.fetch_add(1, Ordering::SeqCst);
                Ok(Produced {
                    value: "live".into(),
                    serialized: None,
                    lifetime: Lifetime::new(Span::from_secs(10), Span::ZERO),
                })
            },
            |waiter| waiter.wait(),
        );
        assert!(matches!(
            answer,
            Err(SharedError::Store(StoreError::Interrupted))
        ));
    }
    assert_eq!(computed.load(Ordering::SeqCst), 0);
    // Five interrupts, each one store call: none counted, the breaker shut.
    assert_eq!(cache.store().calls.load(Ordering::SeqCst), 5);
    assert_eq!(cache.stats().failures.load(Ordering::Relaxed), 0);
    assert!(!cache.breaker_open());
}

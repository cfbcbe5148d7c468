//! Abuse cases: caches.

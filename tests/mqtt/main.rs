//! Single-node protocol tests: each test starts its own `raftmq` process on a free
//! loopback port and talks to it over real sockets, with rumqttc (3.1.1 and 5.0) where
//! it can express the scenario and a byte-level client where the wire must be exact.
//!
//! Files are numbered by kind (STYLE.md 15): t10 basic, t20 sessions/retained/will,
//! t30 5.0 features, t35 `$SYS` topics, t40 limits and ACL, t50 bad input, t60 config,
//! t70 monitoring (`/metrics`). A scenario that applies to both protocol versions is one
//! `async fn scenario(v: Version)` plus `both!(scenario)`, which makes the tests
//! `scenario::v4` and `scenario::v5`.
//!
//! Run against Mosquitto instead: `RAFTMQ_TEST_BROKER=mosquitto cargo test -p raftmq
//! --test mqtt` (see tests/support/mod.rs).

#[path = "../support/mod.rs"]
mod support;

/// `both!(name)` turns `async fn name(v: Version)` into tests `name::v4` and `name::v5`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn v4() {
                super::$name(crate::support::codec::Version::V4).await
            }

            #[tokio::test]
            async fn v5() {
                super::$name(crate::support::codec::Version::V5).await
            }
        }
    )*};
}

mod t10_connect;
mod t10_pubsub;
mod t15_transports;
mod t20_retained_will;
mod t20_sessions;
mod t25_durable_acks;
mod t30_v5;
mod t35_sys_topics;
mod t40_auth;
mod t40_limits_acl;
mod t42_quotas;
mod t44_overload;
mod t45_slow_consumers;
mod t50_bad_input;
mod t60_config;
mod t70_metrics;

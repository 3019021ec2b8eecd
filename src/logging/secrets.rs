//! The clamp under every filter: whatever `MOUNTPOINT_LOG`, `--debug-crt` or SIGUSR2 ask
//! for, events that can print a request's headers never pass. The signer's debug lines carry
//! the canonical request (session token included); `trace` lines of the SDK and the HTTP
//! stack print whole requests, `Authorization` and all.

use tracing::{Level, Metadata};

/// Crates whose `debug` lines already print what is signed.
const SIGNING: [&str; 2] = ["aws_sigv4", "aws_smithy_runtime_api"];

/// Crates whose `trace` lines print requests or connection secrets.
const WIRE: [&str; 5] = ["aws_", "hyper", "h2", "rustls", "reqwest"];

/// Whether an event (or span) of this kind must never be logged.
pub fn may_carry_secrets(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let level = *meta.level();
    let within = |root: &str| target.starts_with(root);
    (level > Level::INFO && SIGNING.iter().any(|c| within(c)))
        || (level == Level::TRACE && WIRE.iter().any(|c| within(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// A callsite for the test's metadata; never registered, so never asked for its own.
    struct Probe;
    static PROBE: Probe = Probe;
    impl tracing::Callsite for Probe {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unimplemented!("the probe is not registered")
        }
    }

    /// The clamp's answer for an event of `level` from `target`.
    fn blocked(target: &'static str, level: Level) -> bool {
        let fields = tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&PROBE));
        let kind = tracing::metadata::Kind::EVENT;
        let meta = Metadata::new("probe", target, level, None, None, None, fields, kind);
        may_carry_secrets(&meta)
    }

    #[test]
    fn the_signer_stops_at_info_and_the_wire_stops_at_debug() {
        assert!(blocked("aws_sigv4::http_request::sign", Level::DEBUG));
        assert!(blocked("aws_smithy_runtime_api::client", Level::TRACE));
        assert!(!blocked("aws_sigv4::http_request::sign", Level::INFO));
        assert!(blocked("hyper_util::client", Level::TRACE));
        assert!(blocked("aws_smithy_runtime::client", Level::TRACE));
        assert!(blocked("rustls::client", Level::TRACE));
        assert!(!blocked("aws_smithy_runtime::client", Level::DEBUG));
        assert!(!blocked("mount_s3::fs", Level::TRACE));
        assert!(!blocked("fuser::request", Level::TRACE));
    }
}

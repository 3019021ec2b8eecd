//! `--bind INTERFACE...`: every S3 connection is bound to one of these network interfaces
//! (SO_BINDTODEVICE; root or CAP_NET_RAW), requests taking them in turn, so a node with
//! several NICs spreads its traffic over all of them, as Mountpoint does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{self, TlsContext};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Checks that each interface exists; the error is one line naming the first that does not.
pub(super) fn check_interfaces(interfaces: &[String]) -> Result<(), String> {
    for name in interfaces {
        let c_name = std::ffi::CString::new(name.as_str())
            .map_err(|_| format!("--bind {name:?}: not an interface name"))?;
        // SAFETY: a NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(format!("--bind {name}: no such network interface"));
        }
    }
    Ok(())
}

/// An HTTPS client whose connections are bound to `interfaces` in turn, trusting `tls` (the
/// system's roots when `None`).
pub(super) fn client_bound_to(interfaces: &[String], tls: Option<TlsContext>) -> SharedHttpClient {
    let clients = interfaces
        .iter()
        .map(|interface| {
            let (interface, tls) = (interface.clone(), tls.clone());
            aws_smithy_http_client::Builder::new().build_with_connector_fn(
                move |settings, components| {
                    let mut builder = Connector::builder();
                    builder.set_interface(interface.clone());
                    builder.set_connector_settings(settings.cloned());
                    if let Some(components) = components {
                        builder.set_sleep_impl(components.sleep_impl());
                    }
                    let builder = builder.tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ));
                    match tls.clone() {
                        Some(context) => builder.tls_context(context).build(),
                        None => builder.build(),
                    }
                },
            )
        })
        .collect();
    SharedHttpClient::new(InTurn {
        clients,
        next: Arc::new(AtomicUsize::new(0)),
    })
}

/// Clients taken in turn, one request each.
#[derive(Debug)]
struct InTurn {
    clients: Vec<SharedHttpClient>,
    next: Arc<AtomicUsize>,
}

impl HttpClient for InTurn {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(InTurnConnector {
            connectors: self
                .clients
                .iter()
                .map(|c| c.http_connector(settings, components))
                .collect(),
            next: self.next.clone(),
        })
    }
}

#[derive(Debug)]
struct InTurnConnector {
    connectors: Vec<SharedHttpConnector>,
    next: Arc<AtomicUsize>,
}

impl HttpConnector for InTurnConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connectors.len();
        self.connectors[i].call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interfaces_are_named() {
        assert!(check_interfaces(&["lo".into()]).is_ok());
        let err = check_interfaces(&["lo".into(), "nosuchif9".into()]).unwrap_err();
        assert!(err.contains("nosuchif9") && !err.contains('\n'), "{err}");
    }
}

//! Test certificates, made at test time with rcgen (none are committed): a CA, a server
//! certificate for 127.0.0.1 and localhost, client certificates with a chosen CN, and
//! cluster node certificates (DNS raftmq-cluster, server and client use), written as
//! PEM files; and rustls client configurations that trust the CA.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and the files a TLS listener needs, in their own temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "raftmq test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        std::fs::write(pki.ca_file(), &pki.ca_pem).expect("write CA");
        pki
    }

    /// The CA certificate's PEM file (what clients trust, and `--tls-client-ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for the broker on 127.0.0.1 / localhost, written as `name`.pem/.key.
    pub fn server(&self, name: &str) -> CertFiles {
        self.issue(name, "raftmq", &["127.0.0.1", "localhost"])
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> CertFiles {
        self.issue(&format!("client-{cn}"), cn, &[])
    }

    /// A cluster node's certificate (`--cluster-tls-cert-file`): DNS raftmq-cluster,
    /// for TLS servers and clients, written as `name`.pem/.key.
    pub fn cluster_node(&self, name: &str) -> CertFiles {
        self.issue_with(name, name, &["raftmq-cluster"], |params| {
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        })
    }

    fn issue(&self, name: &str, cn: &str, sans: &[&str]) -> CertFiles {
        self.issue_with(name, cn, sans, |_| {})
    }

    fn issue_with(
        &self,
        name: &str,
        cn: &str,
        sans: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> CertFiles {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        edit(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A rustls client configuration trusting this CA, presenting `client` if given.
    pub fn client_config(&self, client: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.cert)
                    .expect("client cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert PEM");
                let key = PrivateKeyDer::from_pem_file(&files.key).expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
        };
        Arc::new(config)
    }
}

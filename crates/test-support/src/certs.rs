//! Test certificates, made fresh per fixture with `rcgen` (ring, no C build
//! of its own): a CA, a server certificate for `localhost` and `127.0.0.1`
//! and a client certificate both signed by it, and an unrelated "wrong" CA
//! for the tests that must see verification fail. Written as PEM files, so
//! that redis-server, Postgres and RabbitMQ read them like real ones.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::fixture::{TempDir, set_mode};

/// PEM files in a private temp dir (`catalog-certs-<uuid>`), removed when the
/// last clone is dropped: the engine fixtures keep a clone, so a server can
/// restart with its files even after the test let go of its own.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The directory holding every file below.
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// For `localhost` and `127.0.0.1` (DNS and IP subject alternative names).
    pub server_cert: PathBuf,
    /// PKCS#8, mode 0600.
    pub server_key: PathBuf,
    /// Common name `postgres`, so that Postgres' `cert` authentication maps
    /// it to the `postgres` role.
    pub client_cert: PathBuf,
    /// PKCS#8, mode 0600.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it instead of `ca` must fail.
    pub wrong_ca: PathBuf,
    _dir: Arc<TempDir>,
}

impl TlsFiles {
    /// Generates the CA, the server and client certificates and the wrong CA
    /// (ECDSA P-256, valid from 1975 to 4096: no test ever meets an expiry).
    pub fn generate() -> Self {
        let dir = TempDir::new("certs");
        let path = |name: &str| dir.path().join(name);

        let (ca_params, ca_key) = ca("Catalog test CA");
        let ca_pem = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the CA")
            .pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let (server_pem, server_key) = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) = leaf(
            &issuer,
            &[],
            "postgres",
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let (wrong_params, wrong_key) = ca("Catalog wrong CA");
        let wrong_pem = wrong_params
            .self_signed(&wrong_key)
            .expect("self-sign the wrong CA")
            .pem();

        let files = Self {
            dir: dir.path().to_owned(),
            ca: path("ca.crt"),
            server_cert: path("server.crt"),
            server_key: path("server.key"),
            client_cert: path("client.crt"),
            client_key: path("client.key"),
            wrong_ca: path("wrong-ca.crt"),
            _dir: Arc::new(dir),
        };
        write(&files.ca, &ca_pem, 0o644);
        write(&files.server_cert, &server_pem, 0o644);
        write(&files.server_key, &server_key, 0o600);
        write(&files.client_cert, &client_pem, 0o644);
        write(&files.client_key, &client_key, 0o600);
        write(&files.wrong_ca, &wrong_pem, 0o644);
        files
    }

    /// The CA certificate, PEM, for a client's trust store.
    pub fn ca_pem(&self) -> Vec<u8> {
        read(&self.ca)
    }

    /// The wrong CA certificate, PEM.
    pub fn wrong_ca_pem(&self) -> Vec<u8> {
        read(&self.wrong_ca)
    }
}

/// Installs ring as rustls' process-wide crypto provider, once; the TLS
/// clients of the fixtures (redis, lapin) need one to be installed.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: the same one, or the
    // test's own choice; either serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, KeyPair::generate().expect("generate a CA key"))
}

/// A certificate signed by `issuer`: (certificate PEM, private key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, issuer).expect("sign a certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, pem: &str, mode: u32) {
    std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

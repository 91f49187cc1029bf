//! One HTTP/1.1 exchange per call, on hyper's connection API (hyper is
//! already here for tonic). A fresh connection each time: a check every 30 s
//! makes a handful of calls, and a pool would only add state to get wrong.
//!
//! https uses rustls (also tonic's) with the system's root certificates
//! (`rustls-native-certs`: the same trust store as curl and the AWS CLI,
//! updated by the distribution's ca-certificates, and a company proxy's CA
//! added there is honoured; a bundled list such as webpki-roots would be
//! frozen at build time).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::AwsError;

/// Where a request goes: `http(s)://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// As written in the Host header (IPv6 in brackets).
    pub host: String,
    pub port: u16,
    /// The path prefix, without a trailing slash (`""` for none).
    pub base: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, AwsError> {
        let bad = || {
            AwsError::Setup(format!(
                "endpoint {s:?} is not http(s)://host[:port][/path]"
            ))
        };
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if authority.starts_with('[') {
            // [v6]:port
            let end = authority.find(']').ok_or_else(bad)?;
            let port = match &authority[end + 1..] {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?,
            };
            (&authority[..=end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }

    /// The Host header: the port only when it is not the scheme's.
    pub fn host_header(&self) -> String {
        if self.port == if self.https { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The client: only the TLS configuration is kept between calls.
#[derive(Clone, Default)]
pub struct Http {
    tls: Arc<OnceLock<Arc<rustls::ClientConfig>>>,
}

impl Http {
    /// Sends `method url.base+path` with `headers` and `body`, all within
    /// `timeout`. `Host` and `Content-Length` are added here.
    pub async fn send(
        &self,
        url: &Url,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Response, AwsError> {
        let target = format!("{}{}", url.base, path);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&target)
            .header("host", url.host_header())
            .header("content-length", body.len());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AwsError::Http(format!("building {method} {target}: {e}")))?;
        let what = format!(
            "{}://{}{}",
            if url.https { "https" } else { "http" },
            url.host_header(),
            target
        );
        let fut = async {
            let addr_host = url.host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((addr_host, url.port))
                .await
                .map_err(|e| AwsError::Http(format!("{what}: connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            if url.https {
                let name = rustls::pki_types::ServerName::try_from(addr_host.to_string())
                    .map_err(|e| AwsError::Http(format!("{what}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls_config()?)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| AwsError::Http(format!("{what}: TLS: {e}")))?;
                exchange(tls, req, &what).await
            } else {
                exchange(tcp, req, &what).await
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(AwsError::Timeout(format!(
                "{what}: no answer within {timeout:?}"
            ))),
        }
    }

    /// A client that trusts only `roots` (tests).
    #[cfg(test)]
    pub fn with_roots(roots: rustls::RootCertStore) -> Result<Http, AwsError> {
        let http = Http::default();
        let _ = http.tls.set(client_config(roots)?);
        Ok(http)
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, AwsError> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(AwsError::Http(format!(
                "no root certificates found on this system (install ca-certificates){}",
                found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )));
        }
        let config = client_config(roots)?;
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, AwsError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AwsError::Http(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn exchange<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
    what: &str,
) -> Result<Response, AwsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| AwsError::Http(format!("{what}: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AwsError::Http(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| AwsError::Http(format!("{what}: reading the answer: {e}")))?
            .to_bytes();
        Ok(Response {
            status,
            body: body.to_vec(),
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A self-signed certificate for `localhost` (DER; a subject no system
    /// root has), and its key, made
    /// with the openssl command.
    fn self_signed(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command (Debian: openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/O=kolach test/CN=kolach aws http test",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        run(&[
            "x509", "-in", "cert.pem", "-outform", "der", "-out", "cert.der",
        ]);
        run(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "der", "-out", "key.der",
        ]);
        (
            std::fs::read(dir.join("cert.der")).unwrap(),
            std::fs::read(dir.join("key.der")).unwrap(),
        )
    }

    /// https end to end on 127.0.0.1: a server the system's roots do not
    /// know is refused; trusted, the answer comes through.
    #[tokio::test]
    async fn https_checks_the_server() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let dir = std::env::temp_dir().join(format!("kolach-aws-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let url = Url::parse(&format!("https://localhost:{port}")).unwrap();
        let t = Duration::from_secs(10);

        let err = Http::default()
            .send(&url, "GET", "/", &[], Vec::new(), t)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS: invalid peer certificate"), "{err}");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert)).unwrap();
        let resp = Http::with_roots(roots)
            .unwrap()
            .send(&url, "GET", "/", &[], Vec::new(), t)
            .await
            .unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://ec2.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.base.as_str()),
            (true, "ec2.eu-west-1.amazonaws.com", 443, "")
        );
        assert_eq!(u.host_header(), "ec2.eu-west-1.amazonaws.com");
        let u = Url::parse("http://127.0.0.1:5000/").unwrap();
        assert_eq!((u.https, u.port, u.base.as_str()), (false, 5000, ""));
        assert_eq!(u.host_header(), "127.0.0.1:5000");
        let u = Url::parse("http://[fd00:ec2::254]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[fd00:ec2::254]", 80));
        let u = Url::parse("http://localhost:4566/aws/").unwrap();
        assert_eq!(u.base, "/aws");
        for bad in [
            "ec2.amazonaws.com",
            "ftp://x",
            "http://",
            "http://h:port",
            "http://[::1",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}

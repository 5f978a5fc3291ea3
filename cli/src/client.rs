//! A small client for the control plane's REST API: bearer token, JSON in
//! and out, the API's error body turned into one readable line.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

type Body = BoxBody<Bytes, std::io::Error>;

/// Where the control plane is and who we are to it.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<outpost_link::Connector, Body>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Client {
    /// A client for the control plane at `url`: `https://`, verified
    /// against `ca_file` (else the system's roots), or `http://` to this
    /// machine ([`outpost_link`] has the rules).
    pub fn new(url: &str, token: Option<String>, ca_file: Option<&Path>) -> anyhow::Result<Client> {
        let target = outpost_link::target(url, ca_file)?;
        let connector = outpost_link::connector(&target, ca_file)?;
        Ok(Client {
            base: target.base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends one request with the token; the response head, unread body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Body,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::CONTENT_TYPE, ctype);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(body).with_context(|| format!("bad URL {url}"))?;
        self.http.request(req).await.map_err(|e| {
            // A certificate refused is a setting to fix: say which.
            match outpost_link::rejected_certificate(&e) {
                Some(why) => anyhow!(
                    "{why} ({}); give the CA that signed it with --ca-file or OUTPOST_CA_FILE",
                    self.base
                ),
                None => unreachable(&self.base, &e),
            }
        })
    }

    /// One request; the status and the whole answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Body,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.request(method.clone(), path, ctype, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer to {method} {path}: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Body,
    ) -> anyhow::Result<Bytes> {
        match self.exchange(method, path, ctype, body).await? {
            (status, bytes) if status.is_success() => Ok(bytes),
            (status, bytes) => Err(api_error(status, &bytes)),
        }
    }

    /// `GET path` of a newline-delimited JSON stream: `on_line` gets each
    /// line as it arrives, until the server ends the stream.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let resp = self
            .request(Method::GET, path, "application/json", full(Bytes::new()))
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow!("reading the stream: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                on_line(&line[..end])?;
            }
        }
        Ok(())
    }

    /// `GET path`, parsed; `None` if the control plane answers 404.
    pub async fn get_if_found<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let (status, bytes) = self
            .exchange(Method::GET, path, "application/json", full(Bytes::new()))
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => parse(&bytes).map(Some),
            s => Err(api_error(s, &bytes)),
        }
    }

    /// `GET path`, parsed.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        parse(
            &self
                .send(Method::GET, path, "application/json", full(Bytes::new()))
                .await?,
        )
    }

    /// `METHOD path` with a JSON body, parsed (`Value::Null` for no body).
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let bytes = serde_json::to_vec(body).context("encoding the request")?;
        let answer = self
            .send(method, path, "application/json", full(bytes))
            .await?;
        if answer.is_empty() {
            return parse(b"null");
        }
        parse(&answer)
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, path, "application/json", full(Bytes::new()))
            .await?;
        Ok(())
    }

    /// `POST path` with `bytes` as `application/wasm`, calling `progress`
    /// with the bytes sent so far as the upload goes.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Bytes,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<T> {
        const CHUNK: usize = 256 * 1024;
        let chunks: Vec<Bytes> = (0..bytes.len())
            .step_by(CHUNK)
            .map(|i| bytes.slice(i..(i + CHUNK).min(bytes.len())))
            .collect();
        let mut sent = 0u64;
        let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
            sent += chunk.len() as u64;
            progress(sent);
            Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk))
        }));
        let body = BodyExt::boxed(StreamBody::new(stream));
        parse(
            &self
                .send(Method::POST, path, "application/wasm", body)
                .await?,
        )
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("unexpected answer from the control plane: {e}"))
}

/// Why the control plane could not be reached, with the cause that says
/// it (hyper's own message is only "client error (Connect)").
fn unreachable(base: &str, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut source = Some(e);
    let mut causes = Vec::new();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return anyhow!("connection refused to {base} (is the control plane running?)");
        }
        causes.push(err.to_string());
        source = err.source();
    }
    causes.dedup();
    anyhow!(
        "cannot reach the control plane at {base}: {}",
        causes.join(": ")
    )
}

/// The API's `{"error": {"code", "message"}}` as one line.
fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (check --token / OUTPOST_TOKEN, or run `outpost login`)",
        _ => "",
    };
    anyhow!("{message}{hint} [{}]", status.as_u16())
}

/// Percent-encodes one path segment (hostnames and names are plain, but
/// `*.example.com` needs its `*` kept and nothing else odd gets through).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
